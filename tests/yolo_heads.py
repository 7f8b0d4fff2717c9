"""YOLO-family detection heads as the exporters write them, built with onnx.helper on one
small backbone and neck (random weights; only the structure matters).

The neck is a feature pyramid with a bottom-up path (as YOLOv5/v8's PAN): its three outputs
``n3`` (8×8, stride 8), ``n4`` (4×4) and ``n5`` (2×2) are where each scale's head begins,
and the maps before them fork into both paths. The heads:

- ``v8-8.2``: Ultralytics 8.2 ``Detect``: per scale a box branch ``cv2`` (two conv blocks and
  a 64-channel DFL conv) and a class branch ``cv3`` (two blocks and an ``nc``-channel conv),
  concatenated per scale into one spatial map; the scales flattened and concatenated, split
  into box and class rows, the DFL decoded, anchors computed from ``Shape`` of each scale's
  map; output ``(N, 4 + nc, A)``.
- ``v8-split``: the same branches, each flattened on its own (no per-scale concatenation).
- ``v5``: YOLOv5's ``Detect``: one 1×1 conv per scale (3 anchors × (5 + nc)); output
  ``(N, A, 5 + nc)``.
- ``v10``: a one-to-one branch per scale (YOLOv10, YOLO26 end to end) on the same maps; the
  NMS-free output keeps the ``TOP_K`` best rows ``(N, TOP_K, 6)``: box, score, class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import save_graph
from onnx import TensorProto, helper, numpy_helper

SIZE = 64
NC = 2
NECK = ("n3/act", "n4/act", "n5/act")  # the neck outputs' node names, finest first
HEADS = ("v8-8.2", "v8-split", "v5", "v10")
TOP_K = 10  # the v10 head's output rows


class _Graph:
    def __init__(self, seed: int) -> None:
        self.nodes: list = []  # type: ignore[type-arg]
        self.inits: list = []  # type: ignore[type-arg]
        self.rng = np.random.default_rng(seed)

    def const(self, name: str, value: object, dtype: type = np.int64) -> str:
        self.inits.append(numpy_helper.from_array(np.array(value, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, src: str, cin: int, cout: int, name: str, *, k: int = 3, stride: int = 1) -> str:
        w = self.const(f"{name}.w", self.rng.normal(0, 0.3, (cout, cin, k, k)), np.float32)
        pad = k // 2
        return self.node(
            "Conv", [src, w], f"{name}/conv", kernel_shape=[k, k], strides=[stride, stride],
            pads=[pad] * 4,
        )  # fmt: skip

    def block(self, src: str, cin: int, cout: int, name: str, *, stride: int = 1) -> str:
        """Conv + SiLU (Sigmoid, Mul), as Ultralytics exports it."""
        conv = self.conv(src, cin, cout, name, stride=stride)
        gate = self.node("Sigmoid", [conv], f"{name}/sig")
        return self.node("Mul", [conv, gate], f"{name}/act")


def _neck(g: _Graph) -> tuple[str, str, str]:
    x = g.block("images", 3, 8, "b1", stride=2)  # 32
    x = g.block(x, 8, 8, "b2", stride=2)  # 16
    p3 = g.block(x, 8, 8, "p3", stride=2)  # 8
    p4 = g.block(p3, 8, 8, "p4", stride=2)  # 4
    p5 = g.block(p4, 8, 8, "p5", stride=2)  # 2
    scales = g.const("up2", [1.0, 1.0, 2.0, 2.0], np.float32)
    up5 = g.node("Resize", [p5, "", scales], "up5", mode="nearest")
    t4 = g.block(g.node("Concat", [up5, p4], "cat4", axis=1), 16, 8, "t4")
    up4 = g.node("Resize", [t4, "", scales], "up4", mode="nearest")
    n3 = g.block(g.node("Concat", [up4, p3], "cat3", axis=1), 16, 8, "n3")
    d3 = g.block(n3, 8, 8, "d3", stride=2)
    n4 = g.block(g.node("Concat", [d3, t4], "cat_d4", axis=1), 16, 8, "n4")
    d4 = g.block(n4, 8, 8, "d4", stride=2)
    n5 = g.block(g.node("Concat", [d4, p5], "cat_d5", axis=1), 16, 8, "n5")
    return n3, n4, n5


def _branch(g: _Graph, src: str, cout: int, name: str) -> str:
    x = g.block(src, 8, 8, f"{name}.0")
    x = g.block(x, 8, 8, f"{name}.1")
    return g.conv(x, 8, cout, f"{name}.2", k=1)


def _anchors(g: _Graph, maps: list[str], strides: list[int]) -> tuple[str, str]:
    """Anchor centres ``(2, A)`` and strides ``(1, A)`` computed from ``Shape`` of each map."""
    centres, steps = [], []
    half = g.const("half", 0.5, np.float32)
    for i, (m, s) in enumerate(zip(maps, strides, strict=True)):
        hw = g.node("Shape", [m], f"anchors/shape{i}", start=2, end=4)
        ones = g.node("ConstantOfShape", [hw], f"anchors/ones{i}",
                      value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))  # fmt: skip
        axis1, axis0 = g.const(f"ax1_{i}", 1), g.const(f"ax0_{i}", 0)
        xs = g.node(
            "Sub", [g.node("CumSum", [ones, axis1], f"anchors/x{i}"), half], f"anchors/cx{i}"
        )
        ys = g.node(
            "Sub", [g.node("CumSum", [ones, axis0], f"anchors/y{i}"), half], f"anchors/cy{i}"
        )
        flat = g.const(f"row{i}", [1, -1])
        xy = [g.node("Reshape", [t, flat], f"{t}/flat") for t in (xs, ys)]
        centres.append(g.node("Concat", xy, f"anchors/xy{i}", axis=0))
        stride = g.const(f"stride{i}", float(s), np.float32)
        steps.append(g.node("Mul", [g.node("Reshape", [ones, flat], f"anchors/one{i}"), stride],
                            f"anchors/stride{i}"))  # fmt: skip
    return (
        g.node("Concat", centres, "anchors/xy", axis=1),
        g.node("Concat", steps, "anchors/strides", axis=1),
    )


def _decode(g: _Graph, dfl: str, anchors: str, strides: str) -> str:
    """DFL box distributions ``(N, 64, A)`` -> ``cx, cy, w, h`` in pixels ``(N, 4, A)``."""
    x = g.node("Reshape", [dfl, g.const("dfl_shape", [0, 4, 16, -1])], "dfl/reshape")
    x = g.node("Transpose", [x], "dfl/transpose", perm=[0, 2, 1, 3])
    x = g.node("Softmax", [x], "dfl/softmax", axis=1)
    bins = g.const("dfl.w", np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1), np.float32)
    x = g.node("Conv", [x, bins], "dfl/conv")
    dist = g.node("Reshape", [x, g.const("dist_shape", [0, 4, -1])], "dfl/dist")
    lt, rb = (f"dist/{n}" for n in ("lt", "rb"))
    g.nodes.append(helper.make_node("Split", [dist, g.const("two2", [2, 2])], [lt, rb], axis=1))
    x1y1 = g.node("Sub", [anchors, lt], "box/x1y1")
    x2y2 = g.node("Add", [anchors, rb], "box/x2y2")
    two = g.const("two", 2.0, np.float32)
    cxy = g.node("Div", [g.node("Add", [x1y1, x2y2], "box/sum"), two], "box/cxy")
    wh = g.node("Sub", [x2y2, x1y1], "box/wh")
    return g.node("Mul", [g.node("Concat", [cxy, wh], "box/xywh", axis=1), strides], "box/px")


def _v8(
    g: _Graph, neck: tuple[str, ...], *, per_scale_concat: bool, prefix: str = ""
) -> tuple[str, str]:
    """Box rows ``(N, 4, A)`` in pixels and class scores ``(N, nc, A)`` after sigmoid."""
    strides = [8, 16, 32]
    boxes, classes, maps = [], [], []
    for i, n in enumerate(neck):
        box = _branch(g, n, 64, f"{prefix}cv2.{i}")
        cls = _branch(g, n, NC, f"{prefix}cv3.{i}")
        if per_scale_concat:
            both = g.node("Concat", [box, cls], f"{prefix}cat{i}", axis=1)
            maps.append(both)
            boxes.append(
                g.node("Reshape", [both, g.const(f"flat{i}.shape", [0, 64 + NC, -1])], f"flat{i}")
            )
        else:
            maps.append(box)
            boxes.append(g.node("Reshape", [box, g.const(f"fb{i}", [0, 64, -1])], f"fbox{i}"))
            classes.append(g.node("Reshape", [cls, g.const(f"fc{i}", [0, NC, -1])], f"fcls{i}"))
    anchors, steps = _anchors(g, maps, strides)
    if per_scale_concat:
        rows = g.node("Concat", boxes, "rows", axis=2)
        dfl, logits = "split/box", "split/cls"
        g.nodes.append(
            helper.make_node("Split", [rows, g.const("parts", [64, NC])], [dfl, logits], axis=1)
        )
    else:
        dfl = g.node("Concat", boxes, "boxes", axis=2)
        logits = g.node("Concat", classes, "classes", axis=2)
    return _decode(g, dfl, anchors, steps), g.node("Sigmoid", [logits], "scores")


def _v5(g: _Graph, neck: tuple[str, ...]) -> str:
    rows = []
    for i, n in enumerate(neck):
        x = g.conv(n, 8, 3 * (5 + NC), f"m.{i}", k=1)
        x = g.node("Reshape", [x, g.const(f"r5_{i}", [0, 3, 5 + NC, -1])], f"m.{i}/reshape")
        x = g.node("Transpose", [x], f"m.{i}/transpose", perm=[0, 1, 3, 2])
        x = g.node("Sigmoid", [x], f"m.{i}/sigmoid")
        rows.append(g.node("Reshape", [x, g.const(f"r5f_{i}", [0, -1, 5 + NC])], f"m.{i}/rows"))
    return g.node("Concat", rows, "output0", axis=1)


def build_yolo(path: Path, head: str, *, seed: int = 0) -> Path:
    """A detector with head ``head`` (see :data:`HEADS`) on a 64×64 input (dynamic batch),
    with Ultralytics' metadata."""
    g = _Graph(seed)
    neck = _neck(g)
    out = helper.make_tensor_value_info
    anchors = 64 + 16 + 4
    if head in ("v8-8.2", "v8-split"):
        box, scores = _v8(g, neck, per_scale_concat=head == "v8-8.2")
        g.node("Concat", [box, scores], "output0", axis=1)
        outputs = [out("output0", TensorProto.FLOAT, ["N", 4 + NC, anchors])]
    elif head == "v5":
        _v5(g, neck)
        outputs = [out("output0", TensorProto.FLOAT, ["N", 3 * anchors, 5 + NC])]
    elif head == "v10":
        box, scores = _v8(g, neck, per_scale_concat=True, prefix="one2one_")
        best = g.node("ReduceMax", [scores], "best", axes=[1], keepdims=1)
        label = g.node("Cast", [g.node("ArgMax", [scores], "argmax", axis=1, keepdims=1)],
                       "label", to=TensorProto.FLOAT)  # fmt: skip
        rows = g.node("Concat", [box, best, label], "rows6", axis=1)
        rows = g.node("Transpose", [rows], "rows6/t", perm=[0, 2, 1])  # (N, A, 6)
        flat = g.node("Reshape", [best, g.const("best_flat", [0, -1])], "best/flat")
        top, keep = "top/values", "top/indices"
        g.nodes.append(helper.make_node("TopK", [flat, g.const("k", [TOP_K])], [top, keep], axis=1))
        keep = g.node("Unsqueeze", [keep, g.const("last", [2])], "top/unsqueeze")
        keep = g.node("Expand", [keep, g.const("six", [1, 1, 6])], "top/expand")
        g.node("GatherElements", [rows, keep], "output0", axis=1)
        outputs = [out("output0", TensorProto.FLOAT, ["N", TOP_K, 6])]
    else:
        raise ValueError(head)
    graph = helper.make_graph(
        g.nodes, f"yolo_{head}",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        outputs, g.inits,
    )  # fmt: skip
    names = "{" + ", ".join(f"{i}: 'c{i}'" for i in range(NC)) + "}"
    metadata = {"names": names, "stride": "32"}  # YOLOv5's own export
    if head != "v5":  # Ultralytics'
        metadata.update(task="detect", imgsz=f"[{SIZE}, {SIZE}]")
    return save_graph(path, graph, metadata)
