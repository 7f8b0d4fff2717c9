"""What a model is for, judged from its outputs and metadata: classifier, detector or
segmenter (what ``auto`` targets and ``onnxcam nodes`` go by)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import detformats
from .errors import ConfigError
from .layouts import NCHW, NHWC, FeatureLayout

__all__ = ["ModelKind", "model_kind", "pixel_layout"]


@dataclass(frozen=True)
class ModelKind:
    """What a model is, judged from its outputs and metadata.

    Attributes:
        kind: ``classifier``, ``detector``, ``segmenter`` or ``unknown``.
        why: how that was decided, in words.
        detection: the detector layout, for a detector.
    """

    kind: str
    why: str
    detection: detformats.Layout | None = None


def model_kind(
    shapes: Mapping[str, tuple[Any, ...] | None],
    metadata: Mapping[str, str],
    input_hw: tuple[int, int],
) -> ModelKind:
    """Classifier, detector or segmenter, in that order of precedence:

    1. Ultralytics metadata (``task``): ``classify`` is a classifier; ``detect``, ``segment``,
       ``pose`` and ``obb`` are detectors (their box head is explained);
    2. an output of one vector per image, ``(B, N)``: a classifier (or an embedding model);
    3. outputs in a detector layout (:mod:`onnxcam.detformats`): a detector;
    4. an output of per-pixel scores ``(B, C, h, w)`` shaped like the input: a segmenter.
    """
    known = {n: tuple(s) for n, s in shapes.items() if s is not None}
    task = detformats.ultralytics_task(metadata)
    if task == "classify":
        return ModelKind("classifier", "Ultralytics metadata: task=classify")
    if task not in ("detect", "segment", "pose", "obb"):
        vectors = [n for n, s in known.items() if len(s) == 2 or (len(s) == 4 and s[2:] == (1, 1))]
        if vectors:
            return ModelKind("classifier", f"output '{vectors[0]}' is one vector per image")
    try:
        layout = detformats.detect_layout(known, metadata, input_hw)
    except ConfigError:
        layout = None
    if layout is not None:
        return ModelKind("detector", layout.why, layout)
    per_pixel = [n for n, s in known.items() if pixel_layout(s, input_hw)]
    if per_pixel:
        return ModelKind(
            "segmenter", f"output '{per_pixel[0]}' holds per-pixel scores shaped like the input"
        )
    return ModelKind("unknown", "no output looks like classes, detections or a per-pixel map")


def pixel_layout(shape: tuple[Any, ...], input_hw: tuple[int, int]) -> FeatureLayout | None:
    """The layout (:data:`~onnxcam.layouts.NCHW` or :data:`~onnxcam.layouts.NHWC`) of a 4-D
    per-pixel output (its map shaped like the input, within a quarter of its aspect ratio), or
    None when it is not one."""
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        return None
    h, w = input_hw
    ratio = w / h if h else 1.0

    def fits(a: int, b: int) -> bool:
        return a > 1 and b > 1 and abs(b / a - ratio) <= 0.25 * ratio

    for layout in (NCHW, NHWC):
        if fits(*layout.grid(shape)):
            return layout
    return None
