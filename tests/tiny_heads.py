"""Tiny detectors and segmenters built with onnx.helper, with numpy references.

Every model starts with the same feature map: ``feat = ReLU(conv1x1(x))``, 4 channels at
input resolution: channels 0..2 copy the colour planes, channel 3 is their mean. Class ``c``
is "how bright colour plane ``c`` is" over a region:

- the detector averages ``feat`` over the cells of three grids (strides 8, 16, 32 on a 32×32
  input: 16 + 4 + 1 = 21 candidates). Candidate ``j`` covers its cell (a fixed box), its
  class scores are ``sigmoid(10 (mean_c - 0.5))`` and its objectness ``sigmoid(10 (mean_3 -
  0.3))``. The same numbers are written in every layout the detection target reads.
- the segmenter averages ``feat`` over 4×4 blocks: logits ``(B, 4, 8, 8)``, class 0 the
  background (``0.5 - mean_3``, so dark pixels), classes 1..3 the colour planes
  (``10 (mean_{c-1} - 0.5)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import save_graph
from onnx import TensorProto, helper, numpy_helper

DET_SIZE = 32
STRIDES = (8, 16, 32)
CLASSES = 3


def _cells() -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: its cell box ``x0, y0, x1, y1`` and its stride."""
    boxes, strides = [], []
    for s in STRIDES:
        n = DET_SIZE // s
        for gy in range(n):
            for gx in range(n):
                boxes.append([gx * s, gy * s, (gx + 1) * s, (gy + 1) * s])
                strides.append(s)
    return np.array(boxes, np.float64), np.array(strides)


CELL_BOXES, CELL_STRIDES = _cells()
A = len(CELL_BOXES)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def features(x: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) -> (B, 4, H, W): the colour planes and their mean, after ReLU."""
    return np.maximum(np.concatenate([x, x.mean(axis=1, keepdims=True)], axis=1), 0.0)


def cell_means(x: np.ndarray) -> np.ndarray:
    """(B, 3, 32, 32) -> (B, 4, A): each feature channel averaged over each candidate's cell."""
    f = features(x.astype(np.float64))
    out = np.zeros((x.shape[0], 4, A))
    for j, (x0, y0, x1, y1) in enumerate(CELL_BOXES.astype(int)):
        out[:, :, j] = f[:, :, y0:y1, x0:x1].mean(axis=(2, 3))
    return out


def reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes (A, 4) xyxy, objectness (B, A), class scores (B, A, 3)) of a batch."""
    means = cell_means(x)
    classes = sigmoid(10 * (means[:, :3] - 0.5)).transpose(0, 2, 1)
    objectness = sigmoid(10 * (means[:, 3] - 0.3))
    return CELL_BOXES, objectness, classes


def _save(path: Path, nodes, outputs, inits, metadata, size=(DET_SIZE, DET_SIZE)) -> Path:  # type: ignore[no-untyped-def]
    graph = helper.make_graph(
        nodes,
        "tiny_head",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, *size])],
        outputs,
        inits,
    )
    return save_graph(path, graph, metadata)


def _feature_nodes() -> tuple[list, list]:  # type: ignore[type-arg]
    w = np.zeros((4, 3, 1, 1), np.float32)
    for c in range(3):
        w[c, c] = 1.0
        w[3, c] = 1.0 / 3.0
    nodes = [
        helper.make_node("Conv", ["images", "feat_w"], ["conv"], name="backbone/conv"),
        helper.make_node("Relu", ["conv"], ["feat"], name="backbone/relu"),
    ]
    return nodes, [numpy_helper.from_array(w, "feat_w")]


def _candidate_nodes() -> tuple[list, list]:  # type: ignore[type-arg]
    """feat -> ``means`` (B, 4, A): average pools per stride, flattened and concatenated."""
    nodes, inits = _feature_nodes()
    parts = []
    for s in STRIDES:
        nodes.append(
            helper.make_node(
                "AveragePool", ["feat"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s],
                name=f"head/pool{s}",
            )
        )  # fmt: skip
        nodes.append(helper.make_node("Reshape", [f"pool{s}", "flat4"], [f"flat{s}"]))
        parts.append(f"flat{s}")
    nodes.append(helper.make_node("Concat", parts, ["means"], axis=2))
    inits.append(numpy_helper.from_array(np.array([0, 4, -1], np.int64), "flat4"))
    return nodes, inits


def _scores(nodes: list, inits: list) -> None:  # type: ignore[type-arg]
    """means -> ``cls`` (B, 3, A) and ``obj`` (B, 1, A), both after sigmoid."""
    inits += [
        numpy_helper.from_array(np.array([0, 0, 0], np.int64), "s_cls"),
        numpy_helper.from_array(np.array([0, 3, 0], np.int64), "s_obj"),
        numpy_helper.from_array(np.array([2**31, 3, 2**31], np.int64), "e_cls"),
        numpy_helper.from_array(np.array([2**31, 4, 2**31], np.int64), "e_obj"),
        numpy_helper.from_array(np.array(10.0, np.float32), "ten"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(0.3, np.float32), "thr_obj"),
    ]
    nodes += [
        helper.make_node("Slice", ["means", "s_cls", "e_cls"], ["m_cls"]),
        helper.make_node("Slice", ["means", "s_obj", "e_obj"], ["m_obj"]),
        helper.make_node("Sub", ["m_cls", "half"], ["c0"]),
        helper.make_node("Mul", ["c0", "ten"], ["c1"]),
        helper.make_node("Sigmoid", ["c1"], ["cls"]),
        helper.make_node("Sub", ["m_obj", "thr_obj"], ["o0"]),
        helper.make_node("Mul", ["o0", "ten"], ["o1"]),
        helper.make_node("Sigmoid", ["o1"], ["obj"]),
    ]


def _boxes_like(nodes: list, inits: list, values: np.ndarray, name: str) -> None:  # type: ignore[type-arg]
    """``name`` (B, 4, A): constant rows broadcast over the batch (via obj * 0)."""
    inits.append(numpy_helper.from_array(values.astype(np.float32)[None], f"{name}_const"))
    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), f"{name}_zero"))
    nodes += [
        helper.make_node("Mul", ["obj", f"{name}_zero"], [f"{name}_z"]),
        helper.make_node("Add", [f"{name}_z", f"{name}_const"], [name]),
    ]


def build_detector(path: Path, fmt: str, *, metadata: dict[str, str] | None = None) -> Path:
    """The tiny detector in layout ``fmt``: yolov8, yolov8-t (transposed), yolov5, yolox,
    nms or boxes-scores."""
    nodes, inits = _candidate_nodes()
    _scores(nodes, inits)
    xywh = np.stack(
        [
            (CELL_BOXES[:, 0] + CELL_BOXES[:, 2]) / 2,
            (CELL_BOXES[:, 1] + CELL_BOXES[:, 3]) / 2,
            CELL_BOXES[:, 2] - CELL_BOXES[:, 0],
            CELL_BOXES[:, 3] - CELL_BOXES[:, 1],
        ]
    )  # (4, A)
    out = helper.make_tensor_value_info
    if fmt in ("yolov8", "yolov8-t"):
        _boxes_like(nodes, inits, xywh, "box")
        nodes.append(helper.make_node("Mul", ["cls", "obj"], ["cls_obj"]))
        name = "output0"
        if fmt == "yolov8":
            nodes.append(helper.make_node("Concat", ["box", "cls_obj"], [name], axis=1))
            outputs = [out(name, TensorProto.FLOAT, ["N", 4 + CLASSES, A])]
        else:
            nodes.append(helper.make_node("Concat", ["box", "cls_obj"], ["rows"], axis=1))
            nodes.append(helper.make_node("Transpose", ["rows"], [name], perm=[0, 2, 1]))
            outputs = [out(name, TensorProto.FLOAT, ["N", A, 4 + CLASSES])]
    elif fmt in ("yolov5", "yolox"):
        values = xywh
        if fmt == "yolox":  # raw: (x, y) offsets in the cell, log of size in strides
            values = np.concatenate([np.full((2, A), 0.5), np.zeros((2, A))])
        _boxes_like(nodes, inits, values, "box")
        nodes.append(helper.make_node("Concat", ["box", "obj", "cls"], ["rows"], axis=1))
        nodes.append(helper.make_node("Transpose", ["rows"], ["output"], perm=[0, 2, 1]))
        outputs = [out("output", TensorProto.FLOAT, ["N", A, 5 + CLASSES])]
    elif fmt == "nms":  # rows of every candidate (no suppression), zero-padded to 30
        _boxes_like(nodes, inits, CELL_BOXES.T, "box")
        nodes += [
            helper.make_node("Mul", ["cls", "obj"], ["cls_obj"]),
            helper.make_node("ReduceMax", ["cls_obj"], ["score"], axes=[1], keepdims=1),
            helper.make_node("ArgMax", ["cls_obj"], ["label_i"], axis=1, keepdims=1),
            helper.make_node("Cast", ["label_i"], ["label"], to=TensorProto.FLOAT),
            helper.make_node("Concat", ["box", "score", "label"], ["rows"], axis=1),
            helper.make_node("Transpose", ["rows"], ["rows_t"], perm=[0, 2, 1]),
        ]
        inits.append(numpy_helper.from_array(np.array([0, 0, 0, 0, 9, 0], np.int64), "pad6"))
        nodes.append(helper.make_node("Pad", ["rows_t", "pad6"], ["output0"]))
        outputs = [out("output0", TensorProto.FLOAT, ["N", A + 9, 6])]
    elif fmt == "boxes-scores":
        _boxes_like(nodes, inits, CELL_BOXES.T / DET_SIZE, "box")  # normalised
        nodes += [
            helper.make_node("Transpose", ["box"], ["boxes"], perm=[0, 2, 1]),
            helper.make_node("Mul", ["cls", "obj"], ["cls_obj"]),
            helper.make_node("Transpose", ["cls_obj"], ["scores"], perm=[0, 2, 1]),
        ]
        outputs = [
            out("boxes", TensorProto.FLOAT, ["N", A, 4]),
            out("scores", TensorProto.FLOAT, ["N", A, CLASSES]),
        ]
    else:
        raise ValueError(fmt)
    return _save(path, nodes, outputs, inits, metadata)


SEG_SIZE = 32
SEG_BLOCK = 4


def seg_reference(x: np.ndarray) -> np.ndarray:
    """(B, 3, 32, 32) -> logits (B, 4, 8, 8)."""
    f = features(x.astype(np.float64))
    b, c, h, w = f.shape
    pooled = f.reshape(b, c, h // SEG_BLOCK, SEG_BLOCK, w // SEG_BLOCK, SEG_BLOCK).mean(axis=(3, 5))
    return np.concatenate([0.5 - pooled[:, 3:4], 10 * (pooled[:, :3] - 0.5)], axis=1)


def build_segmenter(path: Path, *, argmax: bool = False, nhwc: bool = False) -> Path:
    """The tiny segmenter: logits (B, 4, 8, 8) (NHWC with ``nhwc``; class indices with
    ``argmax``)."""
    nodes, inits = _feature_nodes()
    w = np.zeros((4, 4, 1, 1), np.float32)
    bias = np.zeros(4, np.float32)
    w[0, 3] = -1.0
    bias[0] = 0.5
    for c in range(3):
        w[c + 1, c] = 10.0
        bias[c + 1] = -5.0
    inits += [numpy_helper.from_array(w, "seg_w"), numpy_helper.from_array(bias, "seg_b")]
    nodes += [
        helper.make_node(
            "AveragePool", ["feat"], ["blocks"], kernel_shape=[SEG_BLOCK, SEG_BLOCK],
            strides=[SEG_BLOCK, SEG_BLOCK], name="head/pool",
        ),
        helper.make_node("Conv", ["blocks", "seg_w", "seg_b"], ["logits"], name="head/classify"),
    ]  # fmt: skip
    side = SEG_SIZE // SEG_BLOCK
    out = helper.make_tensor_value_info
    if argmax:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0))
        outputs = [out("labels", TensorProto.INT64, ["N", side, side])]
    elif nhwc:
        nodes.append(helper.make_node("Transpose", ["logits"], ["logits_nhwc"], perm=[0, 2, 3, 1]))
        outputs = [out("logits_nhwc", TensorProto.FLOAT, ["N", side, side, 4])]
    else:
        outputs = [out("logits", TensorProto.FLOAT, ["N", 4, side, side])]
    return _save(path, nodes, outputs, inits, None, (SEG_SIZE, SEG_SIZE))


def scene(
    size: tuple[int, int] = (DET_SIZE, DET_SIZE),
    objects: tuple[tuple[int, tuple[int, int, int, int]], ...] = ((0, (0, 0, 8, 8)),),
) -> np.ndarray:
    """An RGB uint8 image, dark, with a saturated square of colour plane ``c`` in each box
    ``(x0, y0, x1, y1)``."""
    image = np.full((*size, 3), 10, np.uint8)
    for c, (x0, y0, x1, y1) in objects:
        image[y0:y1, x0:x1, c] = 255
    return image
