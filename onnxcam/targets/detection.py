"""Detection targets: ``detection[:box=x0,y0,x1,y1][:class=N][:index=i][:conf=0.25]
[:max=10][:iou=...][:mode=iou|drise|grad-cam][:format=auto|...][:output=NAME]``.

They read a detector's raw head, before NMS (see :mod:`onnxcam.detformats` for the
layouts), so a score stays continuous while masks remove parts of the object.

- ``detection`` explains every detection of the clean image whose score is at least
  ``conf``, after class-wise NMS at ``iou`` (default: the exporter's own, 0.7 for Ultralytics,
  0.45 for YOLOv5/YOLOX), at most ``max``, best first, all from one set of masked passes;
- ``detection:index=i`` the i-th of those;
- ``detection:box=x0,y0,x1,y1[:class=N]`` the object in that box (image pixels); without
  ``class``, the class of the clean candidate that matches the box best.

The score of an object ``T`` (box ``b_T``, class ``c``, class vector ``P_T``) on one
(masked) input, over its candidates ``j`` (box ``b_j``, objectness ``O_j``, class scores
``P_j``):

- ``iou`` (the default, except under RISE): ``max_j IoU(b_j, b_T) · O_j · P_j[c]``;
- ``drise`` (Petsiuk et al., D-RISE, CVPR 2021; the default under ``--method rise``):
  ``max_j IoU(b_j, b_T) · O_j · cos(P_j, P_T)``, with ``P_T`` the clean detection's class
  scores (one-hot for ``box=`` with ``class=``);
- ``grad-cam`` (pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``): the candidate of highest
  IoU with ``b_T`` among those scoring at least 0.05 (torchvision's ``box_score_thresh``);
  ``IoU + its score`` when that IoU is above 0.5 and its best class is ``c``, else 0.

Boxes are reported in image pixels (through the letterbox or stretch the image went
through) and in the record's ``box``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..detformats import FORMATS, Candidates, Layout, box_iou, decode, detect_layout, nms
from ..errors import ConfigError, TargetError
from . import keys as read
from .base import BindContext, Key, Outputs, Target, TargetSpec, describe_outputs

__all__ = ["MODES", "DetectionSpec", "DetectionTarget", "detector_layout"]

MODES = ("iou", "drise", "grad-cam")
MAX_CANDIDATES = 30_000  # as Ultralytics' max_nms: candidates above conf kept for NMS
GRADCAM_FLOOR = 0.05  # torchvision's box_score_thresh
GRADCAM_IOU = 0.5


def detector_layout(
    ctx: BindContext, clean: Outputs, *, wanted: str = "auto", output: str | None = None
) -> Layout | None:
    """The detector layout of the model's outputs, or None when they look like no detector."""
    shapes = {name: tuple(value.shape) for name, value in clean.items()}
    return detect_layout(
        shapes, ctx.metadata, ctx.input_hw, wanted=wanted, output=output, values=clean
    )


@dataclass(frozen=True)
class DetectionTarget:
    """One object of one image: its box (input pixels), class and class vector."""

    layout: Layout
    input_hw: tuple[int, int]
    box: np.ndarray
    class_index: int
    class_vector: np.ndarray
    mode: str
    record: dict[str, Any]

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.layout.outputs

    def describe(self) -> dict[str, Any]:
        return dict(self.record)

    def __call__(self, outputs: Outputs) -> np.ndarray:
        return self.score(decode(self.layout, outputs, self.input_hw))

    def score(self, cand: Candidates) -> np.ndarray:
        """The object's score in each sample of a batch of candidates, (B,)."""
        iou = box_iou(cand.boxes, self.box)
        c = min(self.class_index, cand.classes.shape[-1] - 1)
        if self.mode == "iou":
            return (iou * cand.objectness * cand.classes[..., c]).max(axis=1)
        if self.mode == "drise":
            vector = np.zeros(cand.classes.shape[-1])
            n = min(vector.size, self.class_vector.size)
            vector[:n] = self.class_vector[:n]
            norms = np.linalg.norm(cand.classes, axis=-1) * max(np.linalg.norm(vector), 1e-12)
            cosine = (cand.classes @ vector) / np.maximum(norms, 1e-12)
            return (iou * cand.objectness * cosine).max(axis=1)
        scores = cand.scores()
        best = scores.max(axis=-1)
        label = scores.argmax(axis=-1)
        pool = np.where(best >= GRADCAM_FLOOR, iou, -1.0)
        j = pool.argmax(axis=1)
        rows = np.arange(pool.shape[0])
        hit = (pool[rows, j] > GRADCAM_IOU) & (label[rows, j] == self.class_index)
        return np.where(hit, iou[rows, j] + best[rows, j], 0.0)


@dataclass(frozen=True)
class DetectionSpec(TargetSpec):
    """See the module docstring."""

    box: tuple[float, float, float, float] | None = None
    class_index: int | None = None
    index: int | None = None
    conf: float = 0.25
    max: int = 10
    iou: float | None = None
    mode: str | None = None  # None: the method's choice (iou; drise for rise)
    format: str = "auto"
    output: str | None = None

    kind: ClassVar[str] = "detection"
    keys: ClassVar[dict[str, Key]] = {
        "box": read.BOX,
        "class_index": Key(read.count, "a class index (0, 1, ...)"),
        "index": Key(read.count, "the rank of a clean detection (0 = the best)"),
        "conf": Key(read.unit, "a score threshold in [0, 1]"),
        "max": Key(read.positive, "a number of detections, at least 1"),
        "iou": Key(read.unit, "an NMS IoU threshold in [0, 1]"),
        "mode": Key(read.choice(MODES), "one of " + ", ".join(MODES)),
        "format": Key(read.choice(FORMATS), "one of " + ", ".join(FORMATS)),
        "output": Key(str, "an output name of the model"),
    }
    aliases: ClassVar[dict[str, str]] = {"class": "class_index"}

    def bind(self, ctx: BindContext, clean: Outputs) -> list[Target]:
        layout = detector_layout(ctx, clean, wanted=self.format, output=self.output)
        if layout is None:
            raise ConfigError(
                f"target '{self.spec}': the model's outputs ({describe_outputs(clean)}) are no "
                f"detector layout onnxcam knows; name one with detection:format="
                f"{'|'.join(FORMATS[1:])}"
            )
        if self.box is not None and self.index is not None:
            raise ConfigError(f"target '{self.spec}': give box= or index=, not both")
        if self.class_index is not None and layout.classes and self.class_index >= layout.classes:
            raise ConfigError(
                f"target '{self.spec}': class {self.class_index} is out of range; the detector "
                f"has {layout.classes} classes (0..{layout.classes - 1})"
            )
        cand = decode(layout, clean, ctx.input_hw)
        first = Candidates(cand.boxes[0], cand.objectness[0], cand.classes[0])
        if self.box is not None:
            return [self._boxed(ctx, layout, first)]
        found = self._detections(ctx, layout, first)
        if not found:
            raise TargetError(self._nothing(ctx, first))
        if self.index is not None:
            if self.index >= len(found):
                raise TargetError(
                    f"target '{self.spec}': the image has {len(found)} detection(s) scoring at "
                    f"least conf={self.conf:g} (index 0..{len(found) - 1})"
                )
            found = [found[self.index]]
        return [self._target(ctx, layout, first, j, rank) for rank, j in found]

    def _detections(
        self, ctx: BindContext, layout: Layout, cand: Candidates
    ) -> list[tuple[int, int]]:
        """(rank, candidate) of the clean detections above ``conf``, after NMS, best first;
        boxes that fall wholly in the letterbox padding (nothing of the image) are not
        detections."""
        scores = cand.objectness[:, None] * cand.classes
        best = scores.max(axis=1)
        label = scores.argmax(axis=1)
        if self.class_index is not None:
            best = scores[:, self.class_index]
            label = np.full_like(label, self.class_index)
        keep = np.flatnonzero(best >= self.conf)
        if ctx.geometry is not None and keep.size:
            shown = ctx.geometry.to_image(cand.boxes[keep])
            area = (shown[:, 2] - shown[:, 0]) * (shown[:, 3] - shown[:, 1])
            keep = keep[area >= 1.0]
        keep = keep[np.argsort(-best[keep], kind="stable")][:MAX_CANDIDATES]
        iou = layout.iou if self.iou is None else self.iou
        kept = nms(cand.boxes[keep], best[keep], label[keep], iou)[: self.max]
        return [(rank, int(keep[k])) for rank, k in enumerate(kept)]

    def _nothing(self, ctx: BindContext, cand: Candidates) -> str:
        scores = cand.objectness[:, None] * cand.classes
        if scores.size == 0:
            return f"target '{self.spec}': the detector returned no candidates for this image"
        j, c = np.unravel_index(int(np.argmax(scores)), scores.shape)
        label = ctx.label(int(c))
        named = f"class {c}" + (f" '{label}'" if label else "")
        best = float(scores[j, c])
        if best < 0.01:
            return (
                f"target '{self.spec}': the detector finds nothing in this image (the best "
                f"candidate, {named}, scores {best:.3f}); check the preprocessing (--preset, "
                "--bgr, --resize), or name an object with detection:box=x0,y0,x1,y1"
            )
        lower = max(0.01, round(best * 0.9, 2))
        return (
            f"target '{self.spec}': no detection scores at least conf={self.conf:g} in this "
            f"image (the best candidate, {named}, scores {scores[j, c]:.3f}); lower it, e.g. "
            f"--target detection:conf={lower:g}, or name an object with detection:box=x0,y0,x1,y1"
        )

    def _boxed(self, ctx: BindContext, layout: Layout, cand: Candidates) -> Target:
        if ctx.geometry is None:
            box = np.asarray(self.box, np.float64)
        else:
            box = ctx.geometry.to_input(np.asarray(self.box, np.float64))
        if self.class_index is not None:
            c = self.class_index
            vector = np.zeros(max(layout.classes, c + 1, cand.classes.shape[1]))
            vector[c] = 1.0
        else:
            match = box_iou(cand.boxes, box) * cand.objectness * cand.classes.max(axis=1)
            j = int(np.argmax(match))
            c = int(np.argmax(cand.classes[j]))
            vector = cand.classes[j].copy()
        target = self._make(ctx, layout, box, c, vector, None, cand)
        return target

    def _target(
        self, ctx: BindContext, layout: Layout, cand: Candidates, j: int, rank: int
    ) -> Target:
        c = int(np.argmax(cand.objectness[j] * cand.classes[j]))
        if self.class_index is not None:
            c = self.class_index
        return self._make(ctx, layout, cand.boxes[j].copy(), c, cand.classes[j].copy(), rank, cand)

    def _make(
        self,
        ctx: BindContext,
        layout: Layout,
        box: np.ndarray,
        c: int,
        vector: np.ndarray,
        rank: int | None,
        cand: Candidates,
    ) -> Target:
        shown = box if ctx.geometry is None else ctx.geometry.to_image(box)
        label = ctx.label(c)
        mode = self.mode or ctx.detection_mode
        record: dict[str, Any] = {
            "kind": self.kind,
            "spec": self.spec,
            "output": layout.outputs[0] if len(layout.outputs) == 1 else list(layout.outputs),
            "format": layout.format,
            "mode": mode,
            "class_index": c,
            "label": label,
            "box": [round(float(v), 2) for v in shown],
            "box_input": [round(float(v), 2) for v in box],
        }
        if rank is not None:
            record["index"] = rank
        target = DetectionTarget(
            layout, ctx.input_hw, np.asarray(box, np.float64), c, vector, mode, record
        )
        column = cand.classes[:, min(c, cand.classes.shape[1] - 1)]
        confidence = float((box_iou(cand.boxes, target.box) * cand.objectness * column).max())
        record["score"] = confidence  # the model's confidence in the object, IoU-weighted
        record["scored"] = mode
        where = ", ".join(f"{v:.0f}" for v in shown)
        record["summary"] = (
            (f"det {rank}: " if rank is not None else "")
            + f"class {c}"
            + (f" {label}" if label else "")
            + f" ({confidence:.3f}) at [{where}]"
        )
        return target
