"""``onnxcam.export``: saliency computed inside the graph equals onnxcam's own methods."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import resnet_shaped
from click.testing import CliRunner, Result
from conftest import REAL_MODEL, ROOT, build_tiny, save_graph, tiny_weights, write_png
from onnx import TensorProto, helper, numpy_helper

from onnxcam import Explainer, export
from onnxcam.cli import cli
from onnxcam.errors import ConfigError, ModelError
from onnxcam.ingraph import expose, metadata
from onnxcam.ingraph.eigencam import SQUARINGS
from onnxcam.methods.eigencam import principal_projection

SHAPES = ROOT / "models" / "shapes_cnn.onnx"
METHODS = ["cam", "activation", "eigencam", "recipro"]


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("resnet") / "resnet18_shaped.onnx"
    model = resnet_shaped.build(size=112, widths=(8, 16, 16, 32), blocks=1, classes=10)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(resnet: Path) -> dict[str, Path]:
    return {"resnet": resnet, "shapes": SHAPES, "efficientnet": REAL_MODEL}


def session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto | Path, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = session(model)
    values = sess.run(None, {sess.get_inputs()[0].name: x})
    return {o.name: v for o, v in zip(sess.get_outputs(), values, strict=True)}


def inputs(explainer: Explainer, count: int, seed: int = 0) -> np.ndarray:
    """``count`` preprocessed random images, (count, C, H, W)."""
    rng = np.random.default_rng(seed)
    size = (explainer.spec.height, explainer.spec.width, 3)
    return np.concatenate(
        [explainer.preprocess(rng.integers(0, 256, size, np.uint8)) for _ in range(count)]
    )


def assert_same_map(method: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    if method == "eigencam":
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.999
    else:
        assert float(np.abs(got - want).max()) <= 1e-5


@pytest.mark.parametrize("name", ["resnet", "shapes", "efficientnet"])
@pytest.mark.parametrize("method", METHODS)
def test_outputs_and_maps_equal_onnxcam(models: dict[str, Path], name: str, method: str) -> None:
    path = models[name]
    explainer = Explainer(path, method=method)
    at_input = export(path, method=method, resize="input")
    at_feature = export(path, method=method)
    x = inputs(explainer, 2)
    original = run(path, x)
    big, small = run(at_input, x), run(at_feature, x)
    for out, value in original.items():
        assert float(np.abs(big[out] - value).max()) <= 1e-6
        assert float(np.abs(small[out] - value).max()) <= 1e-6
    for i in range(len(x)):
        result = explainer.explain(tensor=x[i : i + 1])
        assert big["saliency"].shape[1] == 1
        assert_same_map(method, big["saliency"][i, 0], result.targets[0].saliency_input)
        fwd = explainer.forward(tensor=x[i : i + 1])
        targets = explainer.bind(fwd)
        feature = explainer.method_maps(fwd, targets, at="feature")[0].map
        assert feature.shape == fwd.acts.shape[1:]
        assert_same_map(method, small["saliency"][i, 0], feature)
        if method in ("cam", "recipro"):
            assert big["saliency_class"][i, 0] == result.targets[0].class_index
        else:
            assert "saliency_class" not in big
    assert big["saliency"].min() >= 0.0 and big["saliency"].max() <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_dynamic_batch_equals_one_at_a_time(resnet: Path, method: str) -> None:
    model = export(resnet, method=method, resize="input")
    explainer = Explainer(resnet, method="activation")
    x = inputs(explainer, 8, seed=3)
    single = [run(model, x[i : i + 1]) for i in range(8)]
    for batch in (1, 3, 8):
        out = run(model, x[:batch])
        for i in range(batch):
            for name, value in out.items():
                assert value.shape[0] == batch
                np.testing.assert_allclose(value[i], single[i][name][0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["cam", "recipro"])
def test_top_k_all_and_fixed_classes(resnet: Path, method: str) -> None:
    explainer = Explainer(resnet, method=method)
    x = inputs(explainer, 2, seed=5)
    logits = run(resnet, x)["logits"]
    top = export(resnet, method=method, target="top:3", resize="input")
    out = run(top, x)
    assert out["saliency"].shape == (2, 3, 112, 112)
    np.testing.assert_array_equal(out["saliency_class"], np.argsort(-logits, axis=1)[:, :3])
    every = run(export(resnet, method=method, target="all", resize="input"), x)
    assert every["saliency"].shape == (2, 10, 112, 112) and "saliency_class" not in every
    fixed = run(export(resnet, method=method, target="class=7,2", resize="input"), x)
    assert fixed["saliency"].shape == (2, 2, 112, 112) and "saliency_class" not in fixed
    for i in range(2):
        result = explainer.explain(tensor=x[i : i + 1], target="top:3")
        for t, target in enumerate(result.targets):
            assert target.class_index == out["saliency_class"][i, t]
            assert_same_map(method, out["saliency"][i, t], target.saliency_input)
            assert_same_map(method, every["saliency"][i, target.class_index], target.saliency_input)
        result = explainer.explain(tensor=x[i : i + 1], target=[7, 2])
        for t, target in enumerate(result.targets):
            assert_same_map(method, fixed["saliency"][i, t], target.saliency_input)


@pytest.mark.parametrize("style", ["softmax", "nhwc"])
@pytest.mark.parametrize("method", METHODS)
def test_tiny_variants(tmp_path: Path, style: str, method: str) -> None:
    """A head that ends in Softmax (CAM scores the probability) and a channels-last map."""
    path = build_tiny(
        tmp_path / "m.onnx", tiny_weights(), softmax=style == "softmax",
        layout="NHWC" if style == "nhwc" else "NCHW",
    )  # fmt: skip
    explainer = Explainer(path, method=method, preset="unit")
    x = inputs(explainer, 3, seed=2)
    out = run(export(path, method=method, resize="input"), x)
    for i in range(3):
        result = explainer.explain(tensor=x[i : i + 1])
        assert_same_map(method, out["saliency"][i, 0], result.targets[0].saliency_input)


def test_input_model_is_never_changed(resnet: Path) -> None:
    model = onnx.load(str(resnet))
    before = model.SerializeToString()
    for method in METHODS:
        export(model, method=method, resize="input")
    expose(model)
    assert model.SerializeToString() == before


def test_metadata_opset_and_full_check(resnet: Path) -> None:
    model = export(resnet, method="eigencam", resize="input")
    onnx.checker.check_model(model, full_check=True)
    meta = metadata(model)
    assert meta["method"] == "eigencam" and meta["node"] == "layer4/out"
    assert meta["power_steps"] == f"{2**SQUARINGS} ({SQUARINGS} squarings)"
    assert meta["resolution"] == "input" and meta["opset"] == "17"
    assert meta["version"]
    assert [o.version for o in model.opset_import] == [17]
    cam = metadata(export(resnet, target="top:2"))
    assert cam["target"] == "top:2" and cam["class_output"] == "logits"


def test_old_opset_is_converted_and_said(tmp_path: Path) -> None:
    path = build_tiny(tmp_path / "m.onnx", tiny_weights())
    old = onnx.load(str(path))  # its Conv, Relu, GAP, Flatten and Gemm are opset-11 ops
    old.opset_import[0].version = 11
    model = export(old, method="cam")
    assert metadata(model)["opset"] == "13 (converted from 11)"
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(run(model, x)["logits"], run(path, x)["logits"], atol=1e-6)


def test_names_never_collide(tmp_path: Path) -> None:
    """A model whose own tensors use export's prefix keeps them; one that already has an
    output named ``saliency`` is refused in one line."""
    w = tiny_weights()
    path = build_tiny(tmp_path / "m.onnx", w)
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.output[0] = "onnxcam_export/Relu_1"
        elif node.op_type == "GlobalAveragePool":
            node.input[0] = "onnxcam_export/Relu_1"
    out = export(model, method="recipro", node="onnxcam_export/Relu_1")
    names = [n for node in out.graph.node for n in node.output]
    assert len(names) == len(set(names))
    model.graph.output[0].name = "saliency"
    model.graph.node[-1].output[0] = "saliency"
    with pytest.raises(ModelError, match="already has a tensor named 'saliency'"):
        export(model)


def test_cam_refuses_a_head_that_is_not_linear(tmp_path: Path) -> None:
    w = tiny_weights()
    nodes = [
        helper.make_node("Conv", ["input", "cw", "cb"], ["conv"], kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["conv"], ["feat"], name="relu"),
        helper.make_node("GlobalAveragePool", ["feat"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["hidden"], transB=1),
        helper.make_node("Relu", ["hidden"], ["hidden_relu"]),
        helper.make_node("Gemm", ["hidden_relu", "w2", "b2"], ["logits"], transB=1),
    ]  # fmt: skip
    inits = [
        numpy_helper.from_array(w.conv_w, "cw"), numpy_helper.from_array(w.conv_b, "cb"),
        numpy_helper.from_array(np.ones((4, 5), np.float32), "w1"),
        numpy_helper.from_array(np.zeros(4, np.float32), "b1"),
        numpy_helper.from_array(np.ones((3, 4), np.float32), "w2"),
        numpy_helper.from_array(np.zeros(3, np.float32), "b2"),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "mlp_head",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits,
    )  # fmt: skip
    path = save_graph(tmp_path / "mlp.onnx", graph)
    with pytest.raises(ConfigError) as caught:
        export(path, method="cam", node="relu")
    message = str(caught.value)
    assert "\n" not in message and "not global average pooling and a linear layer" in message
    export(path, method="recipro", node="relu")  # the head runs as it is: fine


def test_bad_targets_and_methods_are_refused(resnet: Path) -> None:
    for kwargs, match in [
        ({"method": "scorecam"}, "unknown export method"),
        ({"target": "top:0"}, "whole number"),
        ({"target": "class=99"}, "out of range"),
        ({"target": "top:11"}, "more classes"),
        ({"target": "best"}, "unknown target"),
        ({"method": "activation", "target": "top:2"}, "class-agnostic"),
        ({"resize": "image"}, "unknown resize"),
    ]:
        with pytest.raises(ConfigError, match=match):
            export(resnet, **kwargs)


def test_runs_in_a_fresh_session_without_onnxcam(tmp_path: Path, resnet: Path) -> None:
    path = tmp_path / "exported.onnx"
    onnx.save(export(resnet, method="recipro", target="top:2", resize="input"), str(path))
    script = (
        "import sys, numpy as np, onnxruntime as ort\n"
        f"s = ort.InferenceSession({str(path)!r}, providers=['CPUExecutionProvider'])\n"
        "x = np.random.default_rng(0).normal(size=(3, 3, 112, 112)).astype(np.float32)\n"
        "logits, sal, cls = s.run(['logits', 'saliency', 'saliency_class'], {'input': x})\n"
        "assert 'onnxcam' not in sys.modules\n"
        "print(logits.shape, sal.shape, cls.shape, cls.dtype)\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "(3, 10) (3, 2, 112, 112) (3, 2) int64"


def test_expose_adds_the_feature_map_and_nothing_else(resnet: Path) -> None:
    model = expose(resnet)
    x = np.random.default_rng(0).normal(size=(2, 3, 112, 112)).astype(np.float32)
    out = run(model, x)
    assert list(out) == ["logits", "layer4/out"]
    assert out["layer4/out"].shape == (2, 32, 4, 4)
    np.testing.assert_array_equal(out["logits"], run(resnet, x)["logits"])
    assert metadata(model)["method"] == "expose"


def test_eigencam_power_iteration_error_against_svd() -> None:
    """The unrolled power iteration against the exact SVD on maps with a known gap between
    the first two singular values (σ₂/σ₁ = 0.5, 0.95, 0.99): the maps' max abs error.

    Measured (8 squarings = 256 power steps): 9e-7, 3e-7, 7e-7; at σ₂/σ₁ = 0.999 it is 2e-2
    (6 squarings: 9e-7, 8e-4, 2e-2; 4 squarings: 9e-7, 6e-2, 0.25)."""
    rng = np.random.default_rng(0)
    k, h, w = 64, 7, 7
    for ratio in (0.5, 0.95, 0.99):
        u, _ = np.linalg.qr(rng.normal(size=(h * w, h * w)))
        v, _ = np.linalg.qr(rng.normal(size=(k, k)))
        sigma = np.r_[1.0, ratio, 0.5 * ratio ** np.arange(1, h * w - 1)]
        rows = (u[:, : h * w] * sigma) @ v[:, : h * w].T + 5.0
        acts = np.ascontiguousarray(rows.T.reshape(k, h, w).astype(np.float32))
        model = _feature_model(k, h, w)
        got = run(export(model, method="eigencam", node="conv"), _as_input(acts))
        got = got["saliency"][0, 0]
        exact = np.maximum(principal_projection(acts), 0.0)
        exact = exact / exact.max()
        error = float(np.abs(got - exact).max())
        assert error <= 1e-4, (ratio, error)


def _feature_model(k: int, h: int, w: int) -> onnx.ModelProto:
    """A model that turns a one-channel input into the feature map (a Conv 8×8, stride 8,
    whose channel ``8 i + j`` picks pixel (i, j) of each block), so any map of 64 channels
    can be fed (see :func:`_as_input`)."""
    eye = np.eye(k, dtype=np.float32).reshape(k, 1, 8, 8)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "eye"], ["feat"], kernel_shape=[8, 8],
                          strides=[8, 8], name="conv"),
         helper.make_node("ReduceMean", ["feat"], ["pooled"], axes=[2, 3], keepdims=0)],
        "features",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8 * h, 8 * w])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", k])],
        [numpy_helper.from_array(eye, "eye")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _as_input(acts: np.ndarray) -> np.ndarray:
    """The (1, 1, 8h, 8w) input whose SpaceToDepth is ``acts`` (64, h, w)."""
    _, h, w = acts.shape
    return acts.reshape(8, 8, h, w).transpose(2, 0, 3, 1).reshape(1, 1, 8 * h, 8 * w)


# ----------------------------------------------------------------------------- the command


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    return [write_png(tmp_path / f"img{i}.png", seed=i, side=40 + 10 * i) for i in range(2)]


@pytest.mark.parametrize("method", METHODS)
def test_cli_writes_and_verifies(tmp_path: Path, images: list[Path], method: str) -> None:
    out = tmp_path / "out.onnx"
    args = ["export", SHAPES, *images, "-o", out, "--method", method, "--resize", "input"]
    result = invoke(*args, "--verify")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith(f"{out}: saliency (batch, 1, 96, 96)")
    assert "max abs difference" in lines[-1]
    assert float(lines[-1].split("difference ")[1].split(",")[0]) <= 1e-5
    written = onnx.load(str(out))
    assert metadata(written)["method"] == method
    again = invoke("export", SHAPES, "-o", out, "--method", method)
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert invoke("export", SHAPES, "-o", out, "--method", method, "--overwrite").exit_code == 0


def test_cli_repeated_classes_and_feature_resolution(tmp_path: Path, images: list[Path]) -> None:
    out = tmp_path / "out.onnx"
    result = invoke("export", SHAPES, images[0], "-o", out, "--target", "class=1",
                    "--target", "class=3", "--verify")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "saliency (batch, 2, 24, 24)" in result.output and "saliency_class" not in result.output
    assert metadata(onnx.load(str(out)))["classes"] == "[1, 3]"


def test_cli_expose(tmp_path: Path) -> None:
    out = tmp_path / "exposed.onnx"
    result = invoke("export", SHAPES, "-o", out, "--expose")
    assert result.exit_code == 0, result.output
    assert [o.name for o in onnx.load(str(out)).graph.output] == [
        "logits",
        "/features/relu4/Relu_output_0",
    ]
    refused = invoke("export", SHAPES, "-o", tmp_path / "b.onnx", "--expose", "--method", "cam")
    assert refused.exit_code != 0 and "takes no --method" in refused.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "top:0"], "whole number"),
        (["--target", "best"], "unknown target"),
        (["--target", "top:2", "--target", "class=1"], "only class=N targets can be repeated"),
        (["--node", "nope"], "no node or tensor named 'nope'"),
        (["--verify"], "--verify needs one or more images"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke("export", SHAPES, "-o", tmp_path / "o.onnx", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3
    assert not (tmp_path / "o.onnx").exists()


def test_cli_refuses_a_detector_for_cam(tmp_path: Path) -> None:
    det = ROOT / "models" / "shapes_det_yolov8.onnx"
    result = invoke("export", det, "-o", tmp_path / "d.onnx")
    assert result.exit_code == 1 and "needs a class output" in result.output
    assert invoke("export", det, "-o", tmp_path / "d.onnx", "--method", "eigencam").exit_code == 0


def test_cli_keeps_external_data_next_to_the_output(tmp_path: Path, resnet: Path) -> None:
    source = tmp_path / "src" / "model.onnx"
    source.parent.mkdir()
    onnx.save(onnx.load(str(resnet)), str(source), save_as_external_data=True,
              location="model.weights", size_threshold=1024)  # fmt: skip
    out = tmp_path / "out" / "exported.onnx"
    out.parent.mkdir()
    result = invoke("export", source, "-o", out, "--method", "recipro")
    assert result.exit_code == 0, result.output
    assert (out.parent / "exported.onnx.data").stat().st_size > 100_000
    assert out.stat().st_size < 100_000
    x = np.random.default_rng(0).normal(size=(2, 3, 112, 112)).astype(np.float32)
    np.testing.assert_allclose(run(out, x)["logits"], run(resnet, x)["logits"], atol=1e-6)


@pytest.mark.parametrize("name", ["resnet", "shapes"])
def test_recipro_gaussian_mosaic_equals_onnxcams(models: dict[str, Path], name: str) -> None:
    """``kernel="gaussian"``: the 3×3 Gaussian mosaic in the graph is onnxcam's own
    (``--kernel gaussian``), at the input's resolution and per image of a batch."""
    from onnxcam.methods import ReciproOptions

    path = models[name]
    explainer = Explainer(path, method="recipro", options=ReciproOptions(kernel="gaussian"))
    model = export(path, method="recipro", resize="input", kernel="gaussian")
    assert metadata(model)["kernel"] == "gaussian"
    x = inputs(explainer, 2, seed=5)
    out = run(model, x)
    onehot = run(export(path, method="recipro", resize="input"), x)
    for i in range(len(x)):
        result = explainer.explain(tensor=x[i : i + 1])
        assert_same_map("recipro", out["saliency"][i, 0], result.targets[0].saliency_input)
    assert float(np.abs(out["saliency"] - onehot["saliency"]).max()) > 1e-3
    with pytest.raises(ConfigError, match="method 'cam' takes no kernel"):
        export(path, method="cam", kernel="gaussian")
    with pytest.raises(ConfigError, match="unknown kernel 'box'"):
        export(path, method="recipro", kernel="box")
