"""Tiny models built in code with onnx.helper, and a numpy reference of what they compute."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16  # input height and width of the tiny models
K = 5  # feature channels: 0..2 random, 3 a copy of 1, 4 constant (dead)


@dataclass
class TinyWeights:
    """Weights of the tiny CNN: conv 3x3 stride 2 pad 1 -> ReLU -> GAP -> Gemm."""

    conv_w: np.ndarray  # (K, 3, 3, 3)
    conv_b: np.ndarray  # (K,)
    fc_w: np.ndarray  # (classes, K)
    fc_b: np.ndarray  # (classes,)

    def features(self, x: np.ndarray) -> np.ndarray:
        """Reference conv + ReLU on (N, 3, H, W) with explicit loops."""
        n, _, h, w = x.shape
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        oh, ow = (h + 1) // 2, (w + 1) // 2
        out = np.zeros((n, self.conv_w.shape[0], oh, ow), np.float64)
        for i in range(oh):
            for j in range(ow):
                patch = padded[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
                out[:, :, i, j] = np.einsum("ncij,kcij->nk", patch, self.conv_w) + self.conv_b
        return np.maximum(out, 0.0)

    def logits(self, x: np.ndarray) -> np.ndarray:
        pooled = self.features(x).mean(axis=(2, 3))
        return pooled @ self.fc_w.T + self.fc_b


def save_graph(path: Path, graph: onnx.GraphProto, metadata: dict[str, str] | None = None) -> Path:
    """Save ``graph`` as a checked opset-17 model (IR 8, which every supported onnxruntime
    reads) with ``metadata`` in its ``metadata_props``."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_weights(seed: int = 0, classes: int = 3) -> TinyWeights:
    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 0.5, (K, 3, 3, 3)).astype(np.float32)
    conv_b = rng.normal(0, 0.1, K).astype(np.float32)
    conv_w[3] = conv_w[1]
    conv_b[3] = conv_b[1]
    conv_w[4] = 0.0
    conv_b[4] = -1.0  # ReLU(-1) = 0 everywhere: a dead channel
    fc_w = rng.normal(0, 1.0, (classes, K)).astype(np.float32)
    fc_b = rng.normal(0, 0.1, classes).astype(np.float32)
    return TinyWeights(conv_w, conv_b, fc_w, fc_b)


def nan_weights() -> TinyWeights:
    """Weights that make every output NaN."""
    return TinyWeights(
        np.full((K, 3, 3, 3), np.nan, np.float32),
        np.zeros(K, np.float32),
        np.ones((3, K), np.float32),
        np.zeros(3, np.float32),
    )


def build_tiny(
    path: Path,
    weights: TinyWeights,
    *,
    layout: str = "NCHW",
    fixed_batch: bool | int = False,
    reshape_head: bool = False,
    softmax: bool = False,
    mix_batch: bool = False,
    empty_names: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write the tiny CNN to ``path`` in one of several export styles."""
    batch: int | str = int(fixed_batch) if fixed_batch else "N"
    shape = [batch, 3, SIZE, SIZE] if layout == "NCHW" else [batch, SIZE, SIZE, 3]
    nodes = []
    src = "input"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["input"], ["x_nchw"], perm=[0, 3, 1, 2]))
        src = "x_nchw"
    nodes.append(
        helper.make_node(
            "Conv", [src, "conv_w", "conv_b"], ["conv"], kernel_shape=[3, 3], strides=[2, 2],
            pads=[1, 1, 1, 1], name="features/conv",
        )
    )  # fmt: skip
    nodes.append(helper.make_node("Relu", ["conv"], ["feat"], name="features/relu"))
    feat = "feat"
    if mix_batch:  # sums over the batch axis: harmless at batch 1, wrong for larger batches
        nodes.append(helper.make_node("ReduceSum", ["feat", "axis0"], ["feat_mixed"], keepdims=1))
        feat = "feat_mixed"
    nodes.append(helper.make_node("GlobalAveragePool", [feat], ["pooled"], name="head/gap"))
    if reshape_head:
        nodes.append(helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"], name="head/r"))
    else:
        nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="head/flatten"))
    out = "probs" if softmax else "logits"
    nodes.append(
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, name="head/fc")
    )
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="head/sm"))
    if empty_names:
        for node in nodes:
            node.name = ""
    inits = [
        numpy_helper.from_array(weights.conv_w, "conv_w"),
        numpy_helper.from_array(weights.conv_b, "conv_b"),
        numpy_helper.from_array(weights.fc_w, "fc_w"),
        numpy_helper.from_array(weights.fc_b, "fc_b"),
        numpy_helper.from_array(np.array([int(fixed_batch) or 1, -1], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
    ]
    classes = weights.fc_w.shape[0]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, classes])],
        inits,
    )
    return save_graph(path, graph, metadata)


@pytest.fixture
def weights() -> TinyWeights:
    return tiny_weights()


@pytest.fixture
def tiny(tmp_path: Path, weights: TinyWeights) -> Path:
    return build_tiny(tmp_path / "tiny.onnx", weights)


@pytest.fixture
def image() -> np.ndarray:
    """A 16x16 RGB test image with structure (a bright square on a gradient)."""
    rng = np.random.default_rng(1)
    img = np.linspace(0, 120, SIZE * SIZE * 3).reshape(SIZE, SIZE, 3)
    img[4:10, 6:12] = 230
    img += rng.uniform(0, 20, img.shape)
    return img.astype(np.uint8)


def write_png(path: Path, seed: int, side: int = SIZE) -> Path:
    """A random RGB PNG of ``side`` pixels at ``path`` (its folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (side, side, 3), np.uint8)
    assert cv2.imwrite(str(path), rgb)
    return path


REAL_MODEL = ROOT / "models" / "efficientnet_lite0.onnx"
EXAMPLES = ROOT / "examples"


def head_weights(units: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1.0, (units, K)).astype(np.float32), rng.normal(0, 0.1, units).astype(
        np.float32
    )


def build_heads(
    path: Path,
    weights: TinyWeights,
    heads: dict[str, tuple[int, str | None]],
    *,
    map_output: bool = False,
) -> Path:
    """The tiny CNN's pooled features (``embed``, (N, K)) feeding several linear heads.

    ``heads`` maps an output name to (units, activation), activation ``Softmax``, ``Sigmoid``
    or None; head ``i`` has the weights ``head_weights(units, seed=i)``. The pooled features
    are an output when ``"embed"`` is among the heads' names with units 0; ``map_output``
    also exposes the (N, K, 8, 8) map as output ``heat``.
    """
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1], name="features/conv"),
        helper.make_node("Relu", ["conv"], ["feat"], name="features/relu"),
        helper.make_node("GlobalAveragePool", ["feat"], ["pooled"], name="head/gap"),
        helper.make_node("Flatten", ["pooled"], ["embed"], name="head/flatten"),
    ]  # fmt: skip
    inits = [
        numpy_helper.from_array(weights.conv_w, "conv_w"),
        numpy_helper.from_array(weights.conv_b, "conv_b"),
    ]
    outputs = []
    for i, (name, (units, act)) in enumerate(heads.items()):
        if units == 0:
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", K]))
            continue
        w, b = head_weights(units, i)
        inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
        raw = f"{name}_raw" if act else name
        nodes.append(helper.make_node("Gemm", ["embed", f"{name}_w", f"{name}_b"], [raw], transB=1))
        if act:
            extra = {"axis": 1} if act == "Softmax" else {}
            nodes.append(helper.make_node(act, [raw], [name], **extra))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", units]))
    if map_output:
        nodes.append(helper.make_node("Identity", ["feat"], ["heat"]))
        outputs.append(helper.make_tensor_value_info("heat", TensorProto.FLOAT, ["N", K, 8, 8]))
    graph = helper.make_graph(
        nodes,
        "heads",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        outputs,
        inits,
    )
    return save_graph(path, graph)


def unit_input(image: np.ndarray) -> np.ndarray:
    """The tiny models' input for ``image`` under preset ``unit`` (no resize at 16x16)."""
    return (
        (image.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None].astype(np.float64)
    )
