"""Detector outputs read as candidates: boxes, objectness and class scores, before NMS.

Layouts (per image; ``A`` candidates, ``nc`` classes; boxes in input pixels):

- ``yolov8``: one output ``(B, 4 + nc [+ extra], A)``: ``cx, cy, w, h`` then class scores
  after sigmoid, no objectness (Ultralytics YOLOv8/11 ``Detect`` export; ``segment``,
  ``pose`` and ``obb`` exports append mask coefficients, keypoints or an angle, which are
  skipped: ``nc`` comes from the ``names`` metadata). Also accepted transposed,
  ``(B, A, 4 + nc)``, when the metadata says the model is Ultralytics'.
- ``yolov5``: ``(B, A, 5 + nc)``: ``cx, cy, w, h``, objectness, class scores, both after
  sigmoid (YOLOv5/v7 export, YOLOX/YOLOv6 with decoding in the graph); a class's score is
  ``objectness × class score``.
- ``yolox``: the same columns, boxes not decoded (YOLOX exported with
  ``decode_in_inference=False``): one candidate per cell of the stride-8, 16 and 32 grids,
  ``cx, cy = (x, y + cell) × stride``, ``w, h = exp(w, h) × stride``.
- ``nms``: ``(B, N, 6)`` rows ``x1, y1, x2, y2, score, class`` after NMS, zero-padded
  (Ultralytics ``nms=True``, YOLOv10/YOLO26 end-to-end); a row's objectness is its score and
  its class vector one-hot.
- ``boxes-scores``: two outputs, boxes ``(B, A, 4)`` or ``(B, A, 1, 4)`` as ``x1, y1, x2,
  y2`` (in pixels, or normalised to [0, 1] and then scaled by the input size) and class
  scores ``(B, A, nc)``, no objectness (e.g. YOLOv4 through darknet2onnx, SSD-style heads).
- ``picodet``: per scale, class scores after sigmoid ``(B, A_s, nc)`` and box distributions
  ``(B, A_s, 4 · bins)`` (GFL/DFL logits: PaddleDetection PP-PicoDet exported without its
  post-processing, e.g. the layout models of RapidAI and PP-Structure). Scales are told
  apart by their anchor counts (strides 8, 16, 32, 64); anchor centres are
  ``((j + 0.5) s, (i + 0.5) s)`` and each side is ``s · Σ_k k · softmax(d)_k`` away from the
  centre.

``auto`` reads the layout from the output shapes and the Ultralytics metadata (``task``,
``names``); anything it cannot tell apart is an error naming the formats and ``format=``.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

__all__ = [
    "FORMATS",
    "YOLO_FORMATS",
    "Candidates",
    "Layout",
    "box_iou",
    "decode",
    "detect_layout",
    "metadata_names",
    "nms",
    "ultralytics_task",
]

FORMATS = ("auto", "yolov8", "yolov5", "yolox", "nms", "boxes-scores", "picodet")
YOLO_FORMATS = ("yolov8", "yolov5", "yolox", "nms")
STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Layout:
    """How to read a detector's outputs.

    Attributes:
        format: one of :data:`FORMATS` but ``auto``.
        outputs: the output(s) read: one name, or boxes then scores for ``boxes-scores``.
        classes: ``nc``, the number of classes.
        transposed: ``yolov8`` stored as ``(B, A, C)``.
        iou: the exporter's own NMS IoU threshold (0.7 Ultralytics, 0.45 YOLOv5/YOLOX, 0.5
            PicoDet).
        why: how the layout was recognised, in words.
        strides: ``picodet``: each scale's stride; its ``outputs`` are the scales' class
            scores, then their box distributions, in the same order.
        bins: ``picodet``: bins per box side.
    """

    format: str
    outputs: tuple[str, ...]
    classes: int
    transposed: bool = False
    iou: float = 0.45
    why: str = ""
    strides: tuple[int, ...] = ()
    bins: int = 0


@dataclass(frozen=True)
class Candidates:
    """A batch of decoded candidates: ``boxes`` (B, A, 4) ``x0, y0, x1, y1`` in input
    pixels, ``objectness`` (B, A) and ``classes`` (B, A, nc) in [0, 1]; a candidate's score
    for class ``c`` is ``objectness × classes[..., c]``."""

    boxes: np.ndarray
    objectness: np.ndarray
    classes: np.ndarray

    def scores(self) -> np.ndarray:
        """(B, A, nc): ``objectness × class score``."""
        return self.objectness[..., None] * self.classes


def ultralytics_task(metadata: Mapping[str, str]) -> str | None:
    """Ultralytics' ``task`` (``detect``, ``segment``, ``classify``, ``pose``, ``obb``) when
    the metadata is an Ultralytics export's, else None."""
    task = metadata.get("task")
    if task and ("Ultralytics" in metadata.get("author", "") or "names" in metadata):
        return task.strip()
    return None


def metadata_names(metadata: Mapping[str, str]) -> list[str] | None:
    """Class names from the ``names`` metadata (a Python-literal dict or list, read with
    ``ast.literal_eval``, never evaluated), or None."""
    text = metadata.get("names")
    if not text or len(text) > 1_000_000:
        return None
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None
    if isinstance(value, dict) and all(isinstance(k, int) for k in value):
        if sorted(value) != list(range(len(value))):
            return None
        return [str(value[k]) for k in range(len(value))]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return None


def grid_cells(height: int, width: int, strides: Sequence[int] = STRIDES) -> int:
    """Cells of the stride grids for an input of ``height × width`` (YOLO's ceil division)."""
    return sum(-(-height // s) * -(-width // s) for s in strides)


def _anchor_counts(height: int, width: int) -> set[int]:
    counts = set()
    for strides in (STRIDES, (*STRIDES, 64)):
        cells = grid_cells(height, width, strides)
        counts.update({cells, 3 * cells})
    return counts


def detect_layout(
    shapes: Mapping[str, tuple[int | None, ...]],
    metadata: Mapping[str, str],
    input_hw: tuple[int, int],
    *,
    wanted: str = "auto",
    output: str | None = None,
    values: Mapping[str, np.ndarray] | None = None,
) -> Layout | None:
    """The detector layout of outputs of these shapes, or None when they look like none.

    Args:
        shapes: each output's shape with the batch first (None where unknown).
        metadata: the model's metadata (Ultralytics ``task``, ``names``).
        input_hw: the input size.
        wanted: a format to read the outputs as, or ``auto``.
        output: the output to read (for one-output formats), when the model has several.
        values: the clean outputs, when known (tells decoded YOLOX boxes from raw ones).

    Raises:
        ConfigError: ``wanted`` does not fit the outputs, or ``auto`` cannot decide between
            formats.
    """
    names = metadata_names(metadata)
    task = ultralytics_task(metadata)
    ultralytics = task is not None
    height, width = input_hw
    three: dict[str, tuple[int | None, ...]] = {
        n: s for n, s in shapes.items() if len(s) == 3 and all(isinstance(d, int) for d in s[1:])
    }
    if output is not None:
        if output not in shapes:
            raise ConfigError(
                f"target 'detection': the model has no output '{output}'; its outputs: "
                + ", ".join(f"'{n}' {tuple(s)}" for n, s in shapes.items())
            )
        three = {output: shapes[output]} if output in three else {}
    if wanted == "boxes-scores" or (wanted == "auto" and not three):
        return _boxes_scores(shapes, wanted)
    if wanted == "picodet" or (wanted == "auto" and len(three) > 2 and output is None):
        found = _picodet(three, input_hw, names, values)
        if found is not None or wanted == "picodet":
            if found is None:
                raise ConfigError(
                    "format=picodet needs, per scale, class scores (batch, A, classes) and box "
                    "distributions (batch, A, 4 x bins) with A the cells of strides 8, 16, 32 "
                    "(and 64); the model's outputs are "
                    + ", ".join(f"'{n}' {tuple(s)}" for n, s in shapes.items())
                )
            return found
    if wanted == "auto" and len(three) > 1 and output is None:
        pair = _boxes_scores(shapes, wanted)
        if pair is not None:
            return pair
    if not three:
        raise ConfigError(
            f"target 'detection:format={wanted}' needs an output of shape (batch, rows, columns); "
            "the model's outputs are " + ", ".join(f"'{n}' {tuple(s)}" for n, s in shapes.items())
        )
    if len(three) > 1:
        listed = ", ".join(f"'{n}' {tuple(s)}" for n, s in three.items())
        raise ConfigError(
            f"target 'detection': several outputs could hold detections ({listed}); pick one "
            "with detection:output=NAME"
        )
    name, shape = next(iter(three.items()))
    rows, cols = int(shape[1]), int(shape[2])  # type: ignore[arg-type]
    listed = f"output '{name}' {tuple(shape)}"
    if wanted == "auto":
        wanted, why = _guess(rows, cols, names, task, (height, width), name, values)
    else:
        why = f"format={wanted} as asked"
    if wanted == "yolov8":
        transposed = rows > cols
        columns = cols if transposed else rows
        nc = len(names) if names else columns - 4
        if nc < 1 or columns < 4 + nc:
            raise ConfigError(
                f"{listed} cannot be yolov8 (4 box rows + {nc} classes); valid formats: "
                f"{', '.join(FORMATS)} (detection:format=...)"
            )
        return Layout("yolov8", (name,), nc, transposed, 0.7 if ultralytics else 0.45, why)
    if wanted in ("yolov5", "yolox"):
        nc = cols - 5
        if names and len(names) <= nc:
            nc = len(names)
        if nc < 1:
            raise ConfigError(
                f"{listed} cannot be {wanted} (columns x, y, w, h, objectness, classes...); "
                f"valid formats: {', '.join(FORMATS)} (detection:format=...)"
            )
        return Layout(wanted, (name,), nc, False, 0.45, why)
    if wanted == "nms":
        if cols < 6:
            raise ConfigError(
                f"{listed} cannot be nms (rows x1, y1, x2, y2, score, class); valid formats: "
                f"{', '.join(FORMATS)} (detection:format=...)"
            )
        return Layout("nms", (name,), len(names) if names else 0, False, 0.7, why)
    raise ConfigError(f"unknown detection format '{wanted}'; valid: {', '.join(FORMATS)}")


def _guess(
    rows: int,
    cols: int,
    names: list[str] | None,
    task: str | None,
    input_hw: tuple[int, int],
    output: str,
    values: Mapping[str, np.ndarray] | None,
) -> tuple[str, str]:
    """``(format, why)`` for a ``(B, rows, cols)`` output."""
    nc = len(names) if names else None
    anchors = _anchor_counts(*input_hw)
    shape = f"({'N'}, {rows}, {cols})"
    if task in ("detect", "segment", "pose", "obb"):
        if cols == 6 and rows not in anchors and cols < rows:
            return "nms", f"an Ultralytics {task} export with NMS: rows {shape} of 6 values"
        return "yolov8", f"an Ultralytics {task} export (metadata task={task})"
    if cols == 6 and rows not in anchors and rows <= 10_000:
        return "nms", f"{shape}: rows of x1, y1, x2, y2, score, class after NMS"
    if cols in anchors and rows < cols:
        return "yolov8", f"{shape}: {cols} candidates of 4 box rows and {rows - 4} class scores"
    if rows in anchors and cols >= 6:
        if nc is not None and cols == 4 + nc:
            return "yolov8", f"{shape}: transposed YOLOv8 rows (4 box values and {nc} classes)"
        if rows in {grid_cells(*input_hw), grid_cells(*input_hw, (*STRIDES, 64))}:
            raw = values is not None and _undecoded(values[output])
            if raw:
                return "yolox", f"{shape}: one candidate per grid cell, boxes not yet decoded"
        return "yolov5", f"{shape}: candidates of x, y, w, h, objectness and {cols - 5} classes"
    raise ConfigError(
        f"output '{output}' {shape} is not a detector layout onnxcam recognises for a "
        f"{input_hw[0]}×{input_hw[1]} input; name one with detection:format="
        f"{'|'.join(FORMATS[1:])}"
    )


def _undecoded(value: np.ndarray) -> bool:
    """True when the x, y columns hold cell offsets (YOLOX before decoding), not pixels."""
    xy = np.abs(value[0, :, :2])
    return bool(xy.size) and float(np.percentile(xy, 95)) < 4.0


def _boxes_scores(shapes: Mapping[str, tuple[int | None, ...]], wanted: str) -> Layout | None:
    boxes = [
        n
        for n, s in shapes.items()
        if (len(s) == 3 and s[2] == 4) or (len(s) == 4 and s[2] == 1 and s[3] == 4)
    ]
    scores = [
        n for n, s in shapes.items() if len(s) == 3 and n not in boxes and isinstance(s[2], int)
    ]
    if len(boxes) == 1 and len(scores) == 1:
        nc = int(shapes[scores[0]][2])  # type: ignore[arg-type]
        return Layout(
            "boxes-scores", (boxes[0], scores[0]), nc, False, 0.45,
            f"two outputs: boxes '{boxes[0]}' and class scores '{scores[0]}'",
        )  # fmt: skip
    if wanted == "boxes-scores":
        raise ConfigError(
            "format=boxes-scores needs one output of boxes (batch, A, 4) and one of class "
            "scores (batch, A, classes); the model's outputs are "
            + ", ".join(f"'{n}' {tuple(s)}" for n, s in shapes.items())
        )
    return None


def _picodet(
    three: Mapping[str, tuple[int | None, ...]],
    input_hw: tuple[int, int],
    names: list[str] | None,
    values: Mapping[str, np.ndarray] | None,
) -> Layout | None:
    """Pairs of per-scale class scores and box distributions, or None."""
    height, width = input_hw
    stride_of = {-(-height // s) * -(-width // s): s for s in (*STRIDES, 64)}
    by_count: dict[int, list[str]] = {}
    for name, shape in three.items():
        if shape[1] not in stride_of:
            return None
        by_count.setdefault(int(shape[1]), []).append(name)
    if len(by_count) < 2 or any(len(pair) != 2 for pair in by_count.values()):
        return None
    scores, dists = [], []
    for count in sorted(by_count, reverse=True):  # finest scale first
        a, b = by_count[count]
        ca, cb = int(three[a][2]), int(three[b][2])  # type: ignore[arg-type]
        if values is not None:  # the distributions are logits, the scores are in [0, 1]
            a_unit = float(np.min(values[a])) >= 0 and float(np.max(values[a])) <= 1
            b_unit = float(np.min(values[b])) >= 0 and float(np.max(values[b])) <= 1
            if a_unit != b_unit:
                a, b, ca, cb = (a, b, ca, cb) if a_unit else (b, a, cb, ca)
        elif (names is not None and cb == len(names)) or (ca % 4 == 0 and cb % 4 != 0):
            a, b, ca, cb = b, a, cb, ca
        if cb % 4 != 0:
            return None
        scores.append(a)
        dists.append(b)
    classes = {int(three[n][2]) for n in scores}  # type: ignore[arg-type]
    bins = {int(three[n][2]) // 4 for n in dists}  # type: ignore[arg-type]
    if len(classes) != 1 or len(bins) != 1:
        return None
    strides = tuple(stride_of[int(three[n][1])] for n in scores)  # type: ignore[arg-type]
    nc, k = classes.pop(), bins.pop()
    why = (
        f"{len(scores)} scales (strides {', '.join(map(str, strides))}) of class scores "
        f"({nc} classes) and box distributions ({k} bins a side): a PicoDet head"
    )
    return Layout("picodet", (*scores, *dists), nc, False, 0.5, why, strides, k)


def _xywh(b: np.ndarray) -> np.ndarray:
    half = b[..., 2:4] / 2
    return np.concatenate([b[..., 0:2] - half, b[..., 0:2] + half], axis=-1)


def _yolox_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    cells, strides = [], []
    for s in STRIDES:
        gh, gw = -(-height // s), -(-width // s)
        ys, xs = np.mgrid[0:gh, 0:gw]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full((gh * gw, 1), s, np.float64))
    return np.concatenate(cells).astype(np.float64), np.concatenate(strides)


def decode(
    layout: Layout, outputs: Mapping[str, np.ndarray], input_hw: tuple[int, int]
) -> Candidates:
    """The candidates in a batch of outputs (see the module docstring for each layout)."""
    value = np.asarray(outputs[layout.outputs[0]], np.float64)
    nc = layout.classes
    if layout.format == "yolov8":
        rows = value if layout.transposed else value.transpose(0, 2, 1)
        boxes = _xywh(rows[..., :4])
        classes = rows[..., 4 : 4 + nc]
        return Candidates(boxes, np.ones(classes.shape[:2]), classes)
    if layout.format in ("yolov5", "yolox"):
        box = value[..., :4]
        if layout.format == "yolox":
            cells, strides = _yolox_grid(*input_hw)
            if cells.shape[0] != value.shape[1]:
                raise ConfigError(
                    f"format=yolox expects {cells.shape[0]} candidates (strides 8, 16, 32) for a "
                    f"{input_hw[0]}×{input_hw[1]} input; output has {value.shape[1]}"
                )
            xy = (box[..., :2] + cells) * strides
            wh = np.exp(np.clip(box[..., 2:4], -30.0, 30.0)) * strides
            box = np.concatenate([xy, wh], axis=-1)
        return Candidates(_xywh(box), value[..., 4], value[..., 5 : 5 + nc])
    if layout.format == "nms":
        classes_found = value[..., 5]
        n_classes = max(nc, int(np.nanmax(classes_found, initial=0.0)) + 1)
        index = np.clip(np.rint(classes_found), 0, n_classes - 1).astype(np.int64)
        onehot = np.zeros((*value.shape[:2], n_classes))
        np.put_along_axis(onehot, index[..., None], 1.0, axis=-1)
        return Candidates(value[..., :4], value[..., 4], onehot)
    if layout.format == "picodet":
        return _decode_picodet(layout, outputs, input_hw)
    boxes = value.reshape(value.shape[0], -1, 4)
    scores = np.asarray(outputs[layout.outputs[1]], np.float64)
    if scores.shape[1] != boxes.shape[1] and scores.shape[2] == boxes.shape[1]:
        scores = scores.transpose(0, 2, 1)
    if float(np.abs(boxes).max(initial=0.0)) <= 1.5:  # normalised coordinates
        h, w = input_hw
        boxes = boxes * np.array([w, h, w, h], np.float64)
    return Candidates(boxes, np.ones(scores.shape[:2]), scores)


def _decode_picodet(
    layout: Layout, outputs: Mapping[str, np.ndarray], input_hw: tuple[int, int]
) -> Candidates:
    height, width = input_hw
    n = len(layout.strides)
    boxes, scores = [], []
    for s, score_name, dist_name in zip(
        layout.strides, layout.outputs[:n], layout.outputs[n:], strict=True
    ):
        gh, gw = -(-height // s), -(-width // s)
        ys, xs = np.mgrid[0:gh, 0:gw]
        centres = np.stack([(xs.ravel() + 0.5) * s, (ys.ravel() + 0.5) * s], axis=1)
        logits = np.asarray(outputs[dist_name], np.float64)
        logits = logits.reshape(logits.shape[0], -1, 4, layout.bins)
        logits = np.exp(logits - logits.max(axis=-1, keepdims=True))
        sides = (logits / logits.sum(axis=-1, keepdims=True)) @ np.arange(layout.bins) * s
        boxes.append(np.concatenate([centres - sides[..., :2], centres + sides[..., 2:]], axis=-1))
        scores.append(np.asarray(outputs[score_name], np.float64))
    classes = np.concatenate(scores, axis=1)
    return Candidates(np.concatenate(boxes, axis=1), np.ones(classes.shape[:2]), classes)


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of each of ``boxes`` (..., 4) with one ``box`` (4,), all ``x0, y0, x1, y1``."""
    x0 = np.maximum(boxes[..., 0], box[0])
    y0 = np.maximum(boxes[..., 1], box[1])
    x1 = np.minimum(boxes[..., 2], box[2])
    y1 = np.minimum(boxes[..., 3], box[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(
        boxes[..., 3] - boxes[..., 1], 0, None
    )
    own = max(0.0, float(box[2] - box[0])) * max(0.0, float(box[3] - box[1]))
    union = area + own - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> list[int]:
    """Indices kept by class-wise greedy NMS, best score first."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        if all(
            classes[j] != classes[i] or box_iou(boxes[j][None], boxes[i])[0] <= iou for j in kept
        ):
            kept.append(int(i))
    return kept
