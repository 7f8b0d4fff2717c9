"""The target used when none is asked for: what the model is for.

A detector (:func:`onnxcam.modelinfo.model_kind`) gets ``detection`` (every detection of the
image), a segmenter ``segmentation`` (its most present class other than the background), and
anything else ``class`` (the top class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..modelkind import model_kind
from .base import BindContext, Key, Outputs, Target, TargetSpec
from .classify import ClassSpec
from .detection import DetectionSpec
from .segmentation import SegmentationSpec

__all__ = ["AutoSpec"]


@dataclass(frozen=True)
class AutoSpec(TargetSpec):
    """``auto``: ``detection``, ``segmentation`` or ``class``, by what the model is."""

    kind: ClassVar[str] = "auto"
    keys: ClassVar[dict[str, Key]] = {}

    def chosen(self, ctx: BindContext, clean: Outputs) -> TargetSpec:
        """The spec ``auto`` stands for on this model."""
        shapes = {name: tuple(value.shape) for name, value in clean.items()}
        kind = model_kind(shapes, ctx.metadata, ctx.input_hw).kind
        if kind == "detector":
            return DetectionSpec()
        if kind == "segmenter":
            return SegmentationSpec()
        return ClassSpec()

    def bind(self, ctx: BindContext, clean: Outputs) -> list[Target]:
        return self.chosen(ctx, clean).bind(ctx, clean)
