"""Trains a small anchor-free YOLO-style detector on synthetic scenes and exports it 3 ways.

The data come from ``tools/scenes.py`` (2-6 shapes of 5 classes per 160 x 160 scene). The
model mirrors the layout of Ultralytics YOLOv8 at a tiny scale, so its ONNX graph has the
node names an explainer looks for:

* ``model.0`` ... ``model.8``: backbone of Conv-BN-SiLU blocks (BN folded at export), strides
  2, 4, 4, 8, 8, 16, 16, 32, 32;
* ``model.9`` ... ``model.20``: an FPN + PAN neck; its outputs ``model.14`` (stride 8,
  20 x 20), ``model.17`` (stride 16, 10 x 10) and ``model.20`` (stride 32, 5 x 5) feed the head;
* ``model.21``: the head. Per scale ``i`` a box branch ``cv2.i`` (Conv, Conv, 1 x 1 conv -> 4
  distances left, top, right, bottom in stride units, through softplus) and a class branch
  ``cv3.i`` (Conv, Conv, 1 x 1 conv -> 1 objectness logit + 5 class logits).

Training: each ground-truth box goes to one scale by its longer side (< 24 px: stride 8,
< 36 px: stride 16, else stride 32); the positive cells are those whose centre lies within
``max(w / 4, stride / 2)`` (and ``h / 4`` vertically) of the box centre, a cell claimed by two
boxes takes the smaller. Losses: BCE objectness over all cells and BCE one-hot classes over
positive cells (both summed and divided by the number of positives), GIoU + L1 (distances in
stride units) over positive cells.

Exports of the same weights (opset 17, dynamic batch, input ``images`` float32
``[batch, 3, 160, 160]``, RGB ``x / 255``):

* ``models/shapes_det_yolov8.onnx``: ``output0`` ``[batch, 9, 525]``: rows cx, cy, w, h (input
  pixels) and 5 class scores = sigmoid(class) x sigmoid(objectness); anchors stride 8 first
  (row-major), then 16, then 32. Metadata keys as written by Ultralytics' exporter.
* ``models/shapes_det_yolov5.onnx``: ``output0`` ``[batch, 525, 10]``: cx, cy, w, h,
  sigmoid(objectness), 5 x sigmoid(class); metadata ``stride`` and ``names`` as YOLOv5 writes.
* ``models/shapes_det_nms.onnx``: the YOLOv8 graph followed by NMS in ONNX ops: ``output0``
  ``[batch, 100, 6]`` rows x1, y1, x2, y2, score, class, score descending, zero padded, as
  Ultralytics' ``nms=True`` export (best class per anchor, score > 0.25, class-wise IoU 0.7).

This script needs torch (tools only). From the repository root::

    /tmp/venv-torch/bin/python tools/train_detector.py
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.check_detectors import (  # noqa: E402
    CONF,
    CONF_MAP,
    IOU_NMS,
    MAX_DET,
    decode_v5,
    detection_metrics,
    nms,
)
from tools.scenes import CLASSES, box_stats, make_scenes  # noqa: E402

OPSET = 17
SIZE = 160
STRIDES = (8, 16, 32)
NC = len(CLASSES)
SCALE_LIMITS = (24.0, 36.0)  # longer box side: < 24 -> stride 8, < 36 -> stride 16, else 32
NAMES = "{" + ", ".join(f"{i}: {n!r}" for i, n in enumerate(CLASSES)) + "}"
VERSION = "0.1.0"  # onnxcam's version (pyproject.toml), written as the exporter version


# --------------------------------------------------------------------------------------------
# Model


class Conv(nn.Module):
    """Conv2d + BatchNorm + SiLU, named like Ultralytics' ``Conv`` (``conv``, ``bn``, ``act``)."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Concat(nn.Module):
    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class Detect(nn.Module):
    """Per-scale box (``cv2``) and class (``cv3``) branches; decodes in ``mode`` v8 / v5."""

    def __init__(self, channels: tuple[int, ...], hidden: int = 32) -> None:
        super().__init__()
        self.mode = "train"
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(c, hidden), Conv(hidden, hidden), nn.Conv2d(hidden, 4, 1))
            for c in channels
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(Conv(c, hidden), Conv(hidden, hidden), nn.Conv2d(hidden, 1 + NC, 1))
            for c in channels
        )
        points, strides = [], []
        for s in STRIDES:
            n = SIZE // s
            ys, xs = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
            points.append(torch.stack([xs.flatten(), ys.flatten()]))
            strides.append(torch.full((1, n * n), float(s)))
        self.register_buffer("points", torch.cat(points, 1), persistent=False)  # (2, A)
        self.register_buffer("strides", torch.cat(strides, 1), persistent=False)  # (1, A)
        with torch.no_grad():  # start with a low objectness prior (about 1 %)
            for seq in self.cv3:
                seq[-1].bias[0] = -4.6

    def forward(self, xs: list[torch.Tensor]):  # type: ignore[no-untyped-def]
        outs = [(self.cv2[i](x), self.cv3[i](x)) for i, x in enumerate(xs)]
        if self.mode == "train":
            return outs
        # reshape with -1 for the batch (a constant shape in ONNX, no Shape / Gather nodes)
        hw = [(SIZE // s) ** 2 for s in STRIDES]  # static: the export is for 160 x 160
        box = torch.cat([o[0].reshape(-1, 4, n) for o, n in zip(outs, hw, strict=True)], 2)
        oc = torch.cat([o[1].reshape(-1, 1 + NC, n) for o, n in zip(outs, hw, strict=True)], 2)
        ltrb = F.softplus(box)
        lt, rb = ltrb[:, :2], ltrb[:, 2:]
        xy = (self.points + (rb - lt) / 2) * self.strides
        wh = (lt + rb) * self.strides
        obj = torch.sigmoid(oc[:, :1])
        cls = torch.sigmoid(oc[:, 1:])
        if self.mode == "v8":
            return torch.cat([xy, wh, cls * obj], 1)  # (B, 4 + nc, A)
        if self.mode == "v5":
            return torch.cat([xy, wh, obj, cls], 1).permute(0, 2, 1)  # (B, A, 5 + nc)
        raise ValueError(self.mode)


class ShapesDetector(nn.Module):
    """Layers in one list with Ultralytics-style ``from`` indices."""

    def __init__(self) -> None:
        super().__init__()

        def up() -> nn.Module:
            return nn.Upsample(scale_factor=2, mode="nearest")

        spec: list[tuple[int | list[int], nn.Module]] = [
            (-1, Conv(3, 16, 3, 2)),  # 0  80x80
            (-1, Conv(16, 24, 3, 2)),  # 1  40x40
            (-1, Conv(24, 24)),  # 2
            (-1, Conv(24, 32, 3, 2)),  # 3  20x20
            (-1, Conv(32, 32)),  # 4  C3 (stride 8)
            (-1, Conv(32, 48, 3, 2)),  # 5  10x10
            (-1, Conv(48, 48)),  # 6  C4 (stride 16)
            (-1, Conv(48, 64, 3, 2)),  # 7  5x5
            (-1, Conv(64, 64)),  # 8  C5 (stride 32)
            (-1, up()),  # 9  10x10
            ([-1, 6], Concat()),  # 10
            (-1, Conv(112, 48)),  # 11
            (-1, up()),  # 12 20x20
            ([-1, 4], Concat()),  # 13
            (-1, Conv(80, 32)),  # 14 P3 out (stride 8)
            (-1, Conv(32, 32, 3, 2)),  # 15 10x10
            ([-1, 11], Concat()),  # 16
            (-1, Conv(80, 48)),  # 17 P4 out (stride 16)
            (-1, Conv(48, 48, 3, 2)),  # 18 5x5
            ([-1, 8], Concat()),  # 19
            (-1, Conv(112, 64)),  # 20 P5 out (stride 32)
            ([14, 17, 20], Detect((32, 48, 64))),  # 21
        ]
        self.sources = [f for f, _ in spec]
        self.model = nn.ModuleList(m for _, m in spec)
        self.save = {14, 17, 20, 4, 6, 8, 11}

    @property
    def detect(self) -> Detect:
        d = self.model[-1]
        assert isinstance(d, Detect)
        return d

    def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
        ys: list[torch.Tensor | None] = []
        for f, m in zip(self.sources, self.model, strict=True):
            if f != -1:
                x = [x if j == -1 else ys[j] for j in f] if isinstance(f, list) else ys[f]
            x = m(x)
            ys.append(x if len(ys) in self.save else None)
        return x


# --------------------------------------------------------------------------------------------
# Targets and loss


def assign(boxes: torch.Tensor, classes: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Targets of one image per scale: (positive cell indices, their box (k, 4) x1y1x2y2 in
    pixels, their class)."""
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    level = (side >= SCALE_LIMITS[0]).long() + (side >= SCALE_LIMITS[1]).long()
    out = []
    for li, s in enumerate(STRIDES):
        n = SIZE // s
        sel = level == li
        b, c = boxes[sel], classes[sel]
        if len(b) == 0:
            e = torch.zeros(0, dtype=torch.long)
            out.append((e, torch.zeros(0, 4), e))
            continue
        centre = torch.arange(n, dtype=torch.float32) * s + s / 2  # cell centres, pixels
        bc = (b[:, :2] + b[:, 2:]) / 2
        wh = b[:, 2:] - b[:, :2]
        r = torch.maximum(wh / 4, torch.full_like(wh, s / 2))
        inx = (centre[None, :] - bc[:, :1]).abs() <= r[:, :1]  # (k, n)
        iny = (centre[None, :] - bc[:, 1:]).abs() <= r[:, 1:]
        pos = iny[:, :, None] & inx[:, None, :]  # (k, n, n)
        area = (wh[:, 0] * wh[:, 1])[:, None, None].expand_as(pos)
        cost = torch.where(pos, area, torch.full_like(area, float("inf")))
        best, idx = cost.view(len(b), -1).min(0)  # per cell: smallest box claiming it
        cells = torch.nonzero(torch.isfinite(best)).flatten()
        out.append((cells, b[idx[cells]], c[idx[cells]]))
    return out


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    union = area_a + area_b - inter
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(1)
    iou = inter / union.clamp(min=1e-6)
    return iou - (hull - union) / hull.clamp(min=1e-6)


def detection_loss(
    outs: list[tuple[torch.Tensor, torch.Tensor]],
    targets: list[list[tuple[torch.Tensor, ...]]],
    w_box: float,
    w_l1: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    obj_loss = cls_loss = box_loss = l1_loss = torch.zeros(())
    n_pos = 0
    for li, (box_raw, oc) in enumerate(outs):
        s = STRIDES[li]
        bsz, _, n, _ = oc.shape
        obj_logit = oc[:, 0].reshape(bsz, -1)
        obj_t = torch.zeros_like(obj_logit)
        img_idx, cell_idx, tboxes, tcls = [], [], [], []
        for i, t in enumerate(targets):
            cells, b, c = t[li]
            img_idx.append(torch.full_like(cells, i))
            cell_idx.append(cells)
            tboxes.append(b)
            tcls.append(c)
        ii, cc = torch.cat(img_idx), torch.cat(cell_idx)
        obj_t[ii, cc] = 1.0
        obj_loss = obj_loss + F.binary_cross_entropy_with_logits(obj_logit, obj_t, reduction="sum")
        if len(ii) == 0:
            continue
        n_pos += len(ii)
        tb, tc = torch.cat(tboxes), torch.cat(tcls)
        cls_logit = oc[:, 1:].reshape(bsz, NC, -1)[ii, :, cc]
        cls_loss = cls_loss + F.binary_cross_entropy_with_logits(
            cls_logit, F.one_hot(tc, NC).float(), reduction="sum"
        )
        ltrb = F.softplus(box_raw.reshape(bsz, 4, -1)[ii, :, cc])  # stride units
        cx = (cc % n).float() + 0.5
        cy = (cc // n).float() + 0.5
        pc = torch.stack([cx, cy, cx, cy], 1)
        pred = (pc + ltrb * torch.tensor([-1.0, -1.0, 1.0, 1.0])) * s
        target_ltrb = ((tb - pc * s) / s) * torch.tensor([-1.0, -1.0, 1.0, 1.0])
        box_loss = box_loss + (1.0 - giou(pred, tb)).sum()
        l1_loss = l1_loss + (ltrb - target_ltrb.clamp(min=0.01)).abs().sum(1).sum()
    norm = max(n_pos, 1)
    parts = {
        "obj": obj_loss / norm,
        "cls": cls_loss / norm,
        "box": box_loss / norm,
        "l1": l1_loss / norm,
    }
    total = parts["obj"] + parts["cls"] + w_box * parts["box"] + w_l1 * parts["l1"]
    return total, {k: float(v.detach()) for k, v in parts.items()}


# --------------------------------------------------------------------------------------------
# Data


def to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(images)
    return t.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def augment(x: torch.Tensor, boxes: list[torch.Tensor], g: torch.Generator):
    """One random symmetry of the square per batch (flips and transposition keep classes)."""
    f = torch.randint(0, 2, (3,), generator=g).tolist()
    if f[0]:  # horizontal flip
        x = x.flip(3)
        boxes = [torch.stack([SIZE - b[:, 2], b[:, 1], SIZE - b[:, 0], b[:, 3]], 1) for b in boxes]
    if f[1]:  # vertical flip
        x = x.flip(2)
        boxes = [torch.stack([b[:, 0], SIZE - b[:, 3], b[:, 2], SIZE - b[:, 1]], 1) for b in boxes]
    if f[2]:  # transpose
        x = x.transpose(2, 3)
        boxes = [b[:, [1, 0, 3, 2]] for b in boxes]
    return x.contiguous(), boxes


@torch.no_grad()
def predict_v8(model: ShapesDetector, images: np.ndarray, batch: int = 100) -> np.ndarray:
    model.eval()
    model.detect.mode = "v8"
    out = [model(to_input(images[i : i + batch])).numpy() for i in range(0, len(images), batch)]
    model.detect.mode = "train"
    return np.concatenate(out)


def evaluate(model: ShapesDetector, scenes: list) -> dict[str, float]:  # type: ignore[type-arg]
    preds = predict_v8(model, np.stack([s.image for s in scenes]))
    return detection_metrics(
        [nms(p) for p in preds],
        [nms(p, conf=CONF_MAP) for p in preds],
        [s.boxes for s in scenes],
        [s.classes for s in scenes],
    )


# --------------------------------------------------------------------------------------------
# Export


def _meta(model: onnx.ModelProto, items: list[tuple[str, str]]) -> None:
    del model.metadata_props[:]
    for k, v in items:
        p = model.metadata_props.add()
        p.key, p.value = k, v


def ultralytics_metadata(date: str, nms_in_graph: bool) -> list[tuple[str, str]]:
    """The keys, order and string formats of Ultralytics' exporter (``str(value)`` each)."""
    args = {
        "batch": 1,
        "half": False,
        "dynamic": False,  # image size is fixed; only the batch axis is dynamic
        "simplify": False,
        "opset": OPSET,
        "nms": nms_in_graph,
    }
    head = "YOLOv8-style head" + (" with NMS" if nms_in_graph else "")
    return [
        ("description", f"onnxcam shapes detector ({head}) trained on synthetic scenes"),
        ("author", "onnxcam"),
        ("date", date),
        ("version", VERSION),
        ("license", "Apache-2.0"),
        ("docs", "models/README.md"),
        ("stride", str(max(STRIDES))),
        ("task", "detect"),
        ("batch", "1"),
        ("imgsz", str([SIZE, SIZE])),
        ("names", NAMES),
        ("args", str(args)),
        ("channels", "3"),
    ]


def torch_export(model: ShapesDetector, mode: str, path: Path, out_shape: dict[int, str]) -> None:
    model.eval()
    model.detect.mode = mode
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, SIZE, SIZE),),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes={"images": {0: "batch"}, "output0": out_shape},
        do_constant_folding=True,
        training=torch.onnx.TrainingMode.EVAL,
        export_params=True,
    )
    model.detect.mode = "train"


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def add_nms(v8: onnx.ModelProto, conf: float, iou: float, max_det: int) -> onnx.ModelProto:
    """Appends Ultralytics-style NMS to the YOLOv8 graph (best class per anchor, score > conf,
    class-wise NMS with IoU > iou suppressed, top ``max_det`` by score, zero padded)."""
    m = onnx.ModelProto()
    m.CopyFrom(v8)
    g = m.graph
    preds = "/nms/preds"
    for node in g.node:
        node.output[:] = [preds if o == "output0" else o for o in node.output]
    del g.output[:]
    nc = NC
    g.initializer.extend(
        [
            _const("/nms/starts_xy", np.array([0], np.int64)),
            _const("/nms/ends_xy", np.array([2], np.int64)),
            _const("/nms/ends_wh", np.array([4], np.int64)),
            _const("/nms/ends_cls", np.array([4 + nc], np.int64)),
            _const("/nms/axis2", np.array([2], np.int64)),
            _const("/nms/axes_last", np.array([-1], np.int64)),
            _const("/nms/half", np.array(0.5, np.float32)),
            _const("/nms/class_ids", np.arange(nc, dtype=np.int64)),
            _const("/nms/max_per_class", np.array([max_det], np.int64)),
            _const("/nms/iou", np.array([iou], np.float32)),
            _const("/nms/conf", np.array([conf], np.float32)),
            _const("/nms/ba_cols", np.array([0, 2], np.int64)),
            _const("/nms/k", np.array([max_det], np.int64)),
            _const("/nms/expand4", np.array([1, 1, 4], np.int64)),
            _const("/nms/zero", np.array(0.0, np.float32)),
        ]
    )

    def node(op: str, ins: str, outs: str, **attrs: object) -> onnx.NodeProto:
        """A node named ``/nms/<op>_<first output>``; inputs / outputs are space separated."""
        i = [t if t in (preds, "output0") else f"/nms/{t}" for t in ins.split()]
        o = [t if t == "output0" else f"/nms/{t}" for t in outs.split()]
        return helper.make_node(op, i, o, name=f"/nms/{op}_{outs.split()[0]}", **attrs)

    g.node.extend(
        [
            node("Transpose", preds, "t", perm=[0, 2, 1]),  # (B, A, 4 + nc)
            node("Slice", "t starts_xy ends_xy axis2", "xy"),
            node("Slice", "t ends_xy ends_wh axis2", "wh"),
            node("Slice", "t ends_wh ends_cls axis2", "scores"),  # (B, A, nc)
            node("Mul", "wh half", "half_wh"),
            node("Sub", "xy half_wh", "x1y1"),
            node("Add", "xy half_wh", "x2y2"),
            node("Concat", "x1y1 x2y2", "boxes", axis=2),  # (B, A, 4) x1, y1, x2, y2
            node("ReduceMax", "scores", "score", axes=[2], keepdims=0),  # (B, A)
            node("ArgMax", "scores", "cls", axis=2, keepdims=0),  # (B, A), first maximum
            # keep only each anchor's best class, so NMS sees one class per anchor
            node("Unsqueeze", "cls axes_last", "cls_u"),
            node("Equal", "cls_u class_ids", "onehot"),
            node("Cast", "onehot", "onehot_f", to=TensorProto.FLOAT),
            node("Mul", "scores onehot_f", "best_only"),
            node("Transpose", "best_only", "nms_scores", perm=[0, 2, 1]),  # (B, nc, A)
            node(
                "NonMaxSuppression",
                "boxes nms_scores max_per_class iou conf",
                "selected",  # (K, 3): batch, class, anchor
                center_point_box=0,
            ),
            # scatter the kept scores into a zero (B, A) map and take the top max_det per image
            node("Gather", "selected ba_cols", "ba", axis=1),  # (K, 2): batch, anchor
            node("GatherND", "score ba", "sel_scores"),
            node("Mul", "score zero", "zeros"),  # scores are finite: a (B, A) zero map
            node("ScatterND", "zeros ba sel_scores", "kept"),
            node("TopK", "kept k", "top_score top_idx", axis=1, largest=1, sorted=1),
            node("Unsqueeze", "top_idx axes_last", "top_idx_u"),
            node("Expand", "top_idx_u expand4", "top_idx4"),
            node("GatherElements", "boxes top_idx4", "top_boxes", axis=1),
            node("GatherElements", "cls top_idx", "top_cls", axis=1),
            node("Cast", "top_cls", "top_cls_f", to=TensorProto.FLOAT),
            node("Unsqueeze", "top_score axes_last", "top_score_u"),
            node("Unsqueeze", "top_cls_f axes_last", "top_cls_u"),
            node("Concat", "top_boxes top_score_u top_cls_u", "dets", axis=2),
            node("Greater", "top_score_u zero", "valid"),
            node("Where", "valid dets zero", "output0"),  # padding rows all zero
        ]
    )
    g.output.append(
        helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", max_det, 6])
    )
    del g.value_info[:]
    return m


NOT_BATCH_FIRST = frozenset({"/nms/selected", "/nms/ba", "/nms/sel_scores"})  # (K, ...) tensors


def infer_shapes(m: onnx.ModelProto) -> onnx.ModelProto:
    """Stores the shapes of all intermediate tensors, with the batch axis named ``batch``.

    ONNX shape inference loses the symbolic batch axis at ``Resize`` (scales 1, 1, 2, 2) and
    calls it ``unk__N`` from there on. Every tensor of these graphs has the batch first,
    except the NMS index lists in :data:`NOT_BATCH_FIRST`, so a leading ``unk__N`` is renamed
    ``batch`` and the shapes are inferred again.
    """
    del m.graph.value_info[:]
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    for vi in m.graph.value_info:
        dims = vi.type.tensor_type.shape.dim
        if vi.name not in NOT_BATCH_FIRST and dims and dims[0].dim_param.startswith("unk__"):
            dims[0].dim_param = "batch"
    return onnx.shape_inference.infer_shapes(m, strict_mode=True)


def finish(path: Path, meta: list[tuple[str, str]], doc: str) -> None:
    m = onnx.load(str(path))
    _meta(m, [*meta, ("onnxcam.preset", "unit")])
    m.doc_string = doc
    m = infer_shapes(m)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


def export_all(model: ShapesDetector, out_dir: Path, date: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "yolov8": out_dir / "shapes_det_yolov8.onnx",
        "yolov5": out_dir / "shapes_det_yolov5.onnx",
        "nms": out_dir / "shapes_det_nms.onnx",
    }
    a = sum((SIZE // s) ** 2 for s in STRIDES)
    inp = f"input images float32 [batch, 3, {SIZE}, {SIZE}] RGB x/255 (preset unit)"
    torch_export(model, "v8", paths["yolov8"], {0: "batch"})
    finish(
        paths["yolov8"],
        ultralytics_metadata(date, nms_in_graph=False),
        f"onnxcam shapes detector, YOLOv8 layout; {inp}; output0 [batch, {4 + NC}, {a}]: "
        "cx, cy, w, h (pixels), class scores (sigmoid(cls) x sigmoid(obj))",
    )
    torch_export(model, "v5", paths["yolov5"], {0: "batch"})
    finish(
        paths["yolov5"],
        [("stride", str(max(STRIDES))), ("names", NAMES)],
        f"onnxcam shapes detector, YOLOv5 layout; {inp}; output0 [batch, {a}, {5 + NC}]: "
        "cx, cy, w, h (pixels), sigmoid(obj), sigmoid(cls) x nc",
    )
    v8 = onnx.load(str(paths["yolov8"]))
    with_nms = add_nms(v8, CONF, IOU_NMS, MAX_DET)
    onnx.save(with_nms, str(paths["nms"]))
    finish(
        paths["nms"],
        [
            *ultralytics_metadata(date, nms_in_graph=True),
            ("onnxcam.nms_conf", str(CONF)),
            ("onnxcam.nms_iou", str(IOU_NMS)),
            ("onnxcam.max_det", str(MAX_DET)),
        ],
        f"onnxcam shapes detector with NMS; {inp}; output0 [batch, {MAX_DET}, 6]: "
        f"x1, y1, x2, y2, score, class; best class per anchor, score > {CONF}, class-wise NMS "
        f"IoU {IOU_NMS}, sorted by score, zero padded",
    )
    return paths


def _session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def verify(paths: dict[str, Path], torch_v8: np.ndarray, images: np.ndarray, threads: int) -> None:
    x = to_input(images).numpy()
    s8, s5, sn = (_session(paths[k], threads) for k in ("yolov8", "yolov5", "nms"))
    v8 = np.concatenate([s8.run(None, {"images": x[i : i + 25]})[0] for i in range(0, len(x), 25)])
    v5 = np.concatenate([s5.run(None, {"images": x[i : i + 25]})[0] for i in range(0, len(x), 25)])
    dn = np.concatenate([sn.run(None, {"images": x[i : i + 25]})[0] for i in range(0, len(x), 25)])
    print(f"onnx vs torch (yolov8 layout): max |diff| {np.abs(v8 - torch_v8).max():.2e}")
    d5 = max(float(np.abs(decode_v5(a) - b).max()) for a, b in zip(v5, v8, strict=True))
    print(f"yolov5 (scores obj x cls) vs yolov8 layout: max |diff| {d5:.2e}")
    same5 = same_n = 0
    worst = 0.0
    for a8, a5, an in zip(v8, v5, dn, strict=True):
        r8, r5, rn = nms(a8), nms(decode_v5(a5)), an[an[:, 4] > 0]
        if r8.shape == r5.shape and np.array_equal(r8[:, 5], r5[:, 5]):
            same5 += int(np.allclose(r8, r5, atol=1e-4, rtol=0))
        if r8.shape == rn.shape and np.array_equal(r8[:, 5], rn[:, 5]):
            same_n += int(np.allclose(r8, rn, atol=1e-4, rtol=0))
            worst = max(worst, float(np.abs(r8 - rn).max(initial=0.0)))
        if not np.all(an[len(rn) :] == 0):
            raise RuntimeError("NMS output padding is not all zero")
    print(
        f"detections equal to 1e-4 (numpy NMS of yolov8 = of yolov5 = in-graph NMS): "
        f"{same5}/{len(x)} and {same_n}/{len(x)} images (max |diff| vs in-graph {worst:.2e})"
    )
    if same5 != len(x) or same_n != len(x):
        raise RuntimeError("the exports disagree")
    for key, sess in (("yolov8", s8), ("yolov5", s5), ("nms", sn)):
        pair = sess.run(None, {"images": x[:3]})[0]
        singles = np.concatenate([sess.run(None, {"images": x[i : i + 1]})[0] for i in range(3)])
        d = float(np.abs(pair - singles).max())
        print(f"{key}: batch of 3 vs three single runs: max |diff| {d:.2e}")
        if d > 1e-4:
            raise RuntimeError(f"{key}: batching changes the output")


def describe(path: Path) -> None:
    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes: dict[str, list[int | str]] = {}
    for vi in [*m.graph.value_info, *m.graph.output, *m.graph.input]:
        shapes[vi.name] = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
    ops = [n.op_type for n in m.graph.node]
    print(f"{path.name}: {len(ops)} nodes, ops {sorted(set(ops))}")
    producers = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.name.startswith("/model.21/cv") and n.name.endswith(".0/conv/Conv"):
            src = producers[n.input[0]]
            print(
                f"  head {n.name} <- {src.name} ({src.op_type}) -> {n.input[0]} "
                f"{shapes.get(n.input[0], '?')}"
            )
    for n in m.graph.node[-3:]:
        print(f"  tail {n.op_type} {n.name} -> {[(o, shapes.get(o, '?')) for o in n.output]}")


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", type=Path, default=ROOT / "models")
    p.add_argument("--train-scenes", type=int, default=6000)
    p.add_argument("--train-seed", type=int, default=20261127)
    p.add_argument("--val-seed", type=int, default=20261128, help="scenes evaluated per epoch")
    p.add_argument("--val-scenes", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="torch seed (init, shuffling, flips)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--w-box", type=float, default=2.0, help="GIoU loss weight")
    p.add_argument("--w-l1", type=float, default=0.5, help="L1 (stride units) loss weight")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--date", default="2026-11-27T00:00:00", help="metadata 'date' (fixed)")
    p.add_argument("--min-recall", type=float, default=0.9)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    print(
        f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}, "
        f"numpy {np.__version__}, threads {args.threads}"
    )
    t0 = time.perf_counter()
    train = make_scenes(args.train_scenes, args.train_seed)
    val = make_scenes(args.val_scenes, args.val_seed)
    t_data = time.perf_counter() - t0
    print(f"data: {len(train)} train scenes (seed {args.train_seed}) in {t_data:.1f}s")
    print(f"scene statistics: {box_stats(train)}")
    images = torch.from_numpy(np.stack([s.image for s in train]))
    boxes = [torch.from_numpy(s.boxes) for s in train]
    classes = [torch.from_numpy(s.classes) for s in train]

    model = ShapesDetector()
    print(f"model: {sum(q.numel() for q in model.parameters())} parameters")
    steps_per_epoch = len(train) // args.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    g = torch.Generator().manual_seed(args.seed)
    t1 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(train), generator=g)
        sums: dict[str, float] = {}
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch_size : (b + 1) * args.batch_size].tolist()
            x, bb = augment(to_input(images[idx]), [boxes[i] for i in idx], g)
            targets = [assign(bx, classes[i]) for bx, i in zip(bb, idx, strict=True)]
            loss, parts = detection_loss(model(x), targets, args.w_box, args.w_l1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
        m = evaluate(model, val)
        print(
            f"epoch {epoch + 1}/{args.epochs}: "
            + ", ".join(f"{k} {v / steps_per_epoch:.3f}" for k, v in sums.items())
            + f" | val P {m['precision']:.3f} R {m['recall']:.3f} mAP50 {m['mAP50']:.3f}"
            f" | {time.perf_counter() - t1:.0f}s",
            flush=True,
        )
    t_train = time.perf_counter() - t1

    test = make_scenes(50, args.val_seed + 1)
    torch_v8 = predict_v8(model, np.stack([s.image for s in test]))
    paths = export_all(model, args.out_dir, args.date)
    verify(paths, torch_v8, np.stack([s.image for s in test]), args.threads)
    describe(paths["yolov8"])
    m = evaluate(model, val)
    print(
        "summary: "
        + ", ".join(f"{k} {v:.4f}" for k, v in m.items())
        + f"; train {t_train:.0f}s, data {t_data:.0f}s, total {time.perf_counter() - t0:.0f}s"
    )
    for path in paths.values():
        blob = path.read_bytes()
        print(f"wrote {path.name}: {len(blob)} bytes, sha256 {hashlib.sha256(blob).hexdigest()}")
    if m["recall"] < args.min_recall:
        print(f"error: recall {m['recall']:.4f} < {args.min_recall}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
