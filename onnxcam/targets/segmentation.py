"""Segmentation targets: ``segmentation[:N][:region=predicted|all][:box=x0,y0,x1,y1]
[:mask=FILE][:reduce=mean|sum][:prob=auto|softmax|sigmoid|raw][:output=NAME]``.

On a per-pixel output ``(B, C, h, w)`` (or ``(B, h, w, C)``), the score of class ``N`` over a
region ``R`` of the output's pixels is

    f(x) = mean_{p in R} P(x)[N, p]        (reduce=sum: the sum)

where ``P`` is the softmax over ``C`` of logits, the sigmoid of a single channel of logits,
or the output as it is when it already holds probabilities (``prob=auto``; ``softmax``,
``sigmoid`` and ``raw`` force one). The region, fixed on the clean image:

- ``predicted`` (default): the pixels the clean image assigns to ``N`` (argmax over ``C``;
  ``P > 0.5`` for a single channel);
- ``all``: every pixel;
- ``box=x0,y0,x1,y1``: the pixels inside the box, given in image pixels;
- ``mask=FILE``: the non-zero pixels of an image the size of the input image.

Regions given in image pixels go through the same resize (and letterbox) as the image, then
to the output's resolution by area: an output pixel belongs to the region when at least half
of it does (at least the one pixel nearest the region's centre).

Without ``N``: the most present class of the clean image other than the background (the
class whose label is ``background``, ``bg`` or ``__background__``; without labels, class 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from ..errors import ConfigError, TargetError
from ..layouts import FeatureLayout
from ..modelkind import pixel_layout
from . import keys as read
from .base import (
    BindContext,
    Key,
    Outputs,
    OutputTarget,
    Target,
    TargetSpec,
    describe_outputs,
    sigmoid,
    softmax,
)

__all__ = [
    "REGIONS",
    "SegmentationSpec",
    "SegmentationTarget",
    "pixel_layout",
    "segmentation_output",
]

REGIONS = ("predicted", "all")
REDUCES = ("mean", "sum")
SEG_PROBS = ("auto", "softmax", "sigmoid", "raw")
BACKGROUND = ("background", "bg", "__background__", "_background_")


def segmentation_output(clean: Outputs, input_hw: tuple[int, int]) -> list[str]:
    """The outputs that hold per-pixel scores, ``(B, C, h, w)`` or ``(B, h, w, C)``."""
    return [name for name, value in clean.items() if pixel_layout(tuple(value.shape), input_hw)]


def _probabilities(value: np.ndarray, mode: str) -> np.ndarray:
    if mode == "softmax":
        return softmax(value, axis=1)
    if mode == "sigmoid":
        return sigmoid(value)
    return value.astype(np.float64)


@dataclass(frozen=True)
class SegmentationTarget(OutputTarget):
    """Class ``N``'s mean (or summed) score over a fixed region of one output."""

    layout: FeatureLayout
    class_index: int
    mode: str
    region: np.ndarray  # bool (h, w)
    reduce: str

    def __call__(self, outputs: Outputs) -> np.ndarray:
        value = self.layout.to_chw(np.asarray(outputs[self.output]))
        probs = _probabilities(value, self.mode)[:, self.class_index]
        picked = probs[:, self.region]
        return picked.sum(axis=1) if self.reduce == "sum" else picked.mean(axis=1)


@dataclass(frozen=True)
class SegmentationSpec(TargetSpec):
    """See the module docstring."""

    class_index: int | None = None
    region: str = "predicted"
    box: tuple[float, float, float, float] | None = None
    mask: str | None = None
    reduce: str = "mean"
    prob: str = "auto"
    output: str | None = None

    kind: ClassVar[str] = "segmentation"
    value: ClassVar[str | None] = "class_index"
    keys: ClassVar[dict[str, Key]] = {
        "class_index": Key(read.count, "a class index (0, 1, ...)"),
        "region": Key(read.choice(REGIONS), "one of " + ", ".join(REGIONS) + " (or box=, mask=)"),
        "box": read.BOX,
        "mask": Key(str, "an image file the size of the input image"),
        "reduce": Key(read.choice(REDUCES), "one of " + ", ".join(REDUCES)),
        "prob": Key(read.choice(SEG_PROBS), "one of " + ", ".join(SEG_PROBS)),
        "output": Key(str, "an output name of the model"),
    }
    aliases: ClassVar[dict[str, str]] = {"class": "class_index"}

    def bind(self, ctx: BindContext, clean: Outputs) -> list[Target]:
        if self.box is not None and self.mask is not None:
            raise ConfigError(f"target '{self.spec}': give box= or mask=, not both")
        name, layout = self._output(ctx, clean)
        value = layout.to_chw(np.asarray(clean[name]))
        channels = value.shape[1]
        mode = self._mode(ctx, name, value)
        probs = _probabilities(value, mode)[0]  # (C, h, w)
        predicted = (probs[0] > 0.5)[None] if channels == 1 else None
        labels = probs.argmax(axis=0) if channels > 1 else None
        c = self.class_index if self.class_index is not None else self._present(ctx, labels)
        if not 0 <= c < channels:
            raise ConfigError(
                f"target '{self.spec}': class {c} is out of range; output '{name}' has "
                f"{channels} class(es) (0..{channels - 1})"
            )
        region, where = self._region(ctx, probs.shape[1:], labels, predicted, c)
        if not region.any():
            raise TargetError(
                f"target '{self.spec}': class {c} is predicted nowhere in this image; use "
                "region=all, box=x0,y0,x1,y1 or mask=FILE"
            )
        label = ctx.label(c)
        mean = float(probs[c][region].mean())
        record = {
            "kind": self.kind,
            "spec": self.spec,
            "output": name,
            "class_index": c,
            "label": label,
            "score": mean,
            "scored": "probability" if mode != "raw" or self._already(ctx, name, value) else mode,
            "region": where,
            "region_pixels": int(region.sum()),
            "reduce": self.reduce,
            "summary": f"class {c}"
            + (f" {label}" if label else "")
            + f" over {where} ({int(region.sum())} px, mean p={mean:.3f})",
        }
        if self.box is not None:
            record["box"] = list(self.box)
        return [SegmentationTarget(name, record, layout, c, mode, region, self.reduce)]

    def _output(self, ctx: BindContext, clean: Outputs) -> tuple[str, FeatureLayout]:
        if self.output is not None:
            if self.output not in clean:
                raise ConfigError(
                    f"target '{self.spec}': the model has no output '{self.output}'; its "
                    f"outputs: {describe_outputs(clean)}"
                )
            layout = pixel_layout(tuple(clean[self.output].shape), ctx.input_hw)
            if layout is None:
                raise ConfigError(self._not_per_pixel(clean, self.output))
            return self.output, layout
        found = segmentation_output(clean, ctx.input_hw)
        if not found:
            raise ConfigError(self._not_per_pixel(clean, None))
        if len(found) > 1:
            listed = ", ".join(f"'{n}' {tuple(clean[n].shape)}" for n in found)
            raise ConfigError(
                f"target '{self.spec}': several outputs could be meant ({listed}); pick one "
                "with segmentation:output=NAME"
            )
        layout = pixel_layout(tuple(clean[found[0]].shape), ctx.input_hw)
        assert layout is not None
        return found[0], layout

    def _not_per_pixel(self, clean: Outputs, name: str | None) -> str:
        ints = [n for n, v in clean.items() if v.ndim == 3 and np.issubdtype(v.dtype, np.integer)]
        hint = (
            f"; output '{ints[0]}' holds class indices: re-export the model without its final "
            "ArgMax so it gives per-class scores"
            if ints
            else ""
        )
        what = f"output '{name}'" if name else "no output"
        return (
            f"target '{self.spec}': {what} holds per-pixel class scores (batch, classes, h, w) "
            f"matching the input's shape; the outputs: {describe_outputs(clean)}{hint}"
        )

    def _already(self, ctx: BindContext, name: str, value: np.ndarray) -> bool:
        info = next((o for o in ctx.outputs if o.name == name), None)
        if info is not None and info.activation is not None:
            return True
        first = value[0].astype(np.float64)
        if value.shape[1] == 1:
            return bool(first.min() >= 0 and first.max() <= 1)
        return bool(first.min() >= 0 and np.allclose(first.sum(axis=0), 1.0, atol=1e-3))

    def _mode(self, ctx: BindContext, name: str, value: np.ndarray) -> str:
        if self.prob != "auto":
            return self.prob
        if self._already(ctx, name, value):
            return "raw"
        return "sigmoid" if value.shape[1] == 1 else "softmax"

    def _present(self, ctx: BindContext, labels: np.ndarray | None) -> int:
        if labels is None:
            return 0
        counts = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)
        background = _background(ctx)
        if background is not None and background < counts.size:
            counts[background] = -1
        return int(np.argmax(counts)) if counts.max() > 0 else (background or 0)

    def _region(
        self,
        ctx: BindContext,
        out_hw: tuple[int, ...],
        labels: np.ndarray | None,
        predicted: np.ndarray | None,
        c: int,
    ) -> tuple[np.ndarray, str]:
        h, w = int(out_hw[0]), int(out_hw[1])
        if self.box is not None:
            plane = np.zeros(ctx.input_hw, np.float32)
            box = np.asarray(self.box, np.float64)
            if ctx.geometry is not None:
                box = ctx.geometry.to_input(box)
            x0, y0, x1, y1 = box
            plane[
                max(0, int(np.floor(y0))) : max(0, int(np.ceil(y1))),
                max(0, int(np.floor(x0))) : max(0, int(np.ceil(x1))),
            ] = 1.0
            return _to_output(plane, h, w), f"box [{read.show_box(self.box)}]"
        if self.mask is not None:
            plane = self._mask_plane(ctx)
            return _to_output(plane, h, w), f"mask {self.mask}"
        if self.region == "all":
            return np.ones((h, w), bool), "all pixels"
        if labels is not None:
            return labels == c, "the predicted pixels"
        assert predicted is not None
        return predicted[0], "the predicted pixels"

    def _mask_plane(self, ctx: BindContext) -> np.ndarray:
        from ..images import read_image

        try:
            picture = read_image(self.mask)  # type: ignore[arg-type]
        except Exception as exc:
            raise ConfigError(
                f"target '{self.spec}': cannot read mask {self.mask}: {exc}"
            ) from None
        mask = (picture.max(axis=2) > 0).astype(np.uint8) * 255
        geometry = ctx.geometry
        if geometry is None:
            fitted = cv2.resize(mask, ctx.input_hw[::-1], interpolation=cv2.INTER_NEAREST)
            return (fitted > 0).astype(np.float32)
        if mask.shape != (geometry.image_h, geometry.image_w):
            raise ConfigError(
                f"target '{self.spec}': mask {self.mask} is {mask.shape[1]}×{mask.shape[0]}; "
                f"it must be the size of the image, {geometry.image_w}×{geometry.image_h}"
            )
        plane = np.zeros(ctx.input_hw, np.float32)
        content = cv2.resize(
            mask, (geometry.content_w, geometry.content_h), interpolation=cv2.INTER_NEAREST
        )
        plane[
            geometry.top : geometry.top + geometry.content_h,
            geometry.left : geometry.left + geometry.content_w,
        ] = content > 0
        return plane


def _background(ctx: BindContext) -> int | None:
    if ctx.labels:
        for i, name in enumerate(ctx.labels):
            if str(name).strip().lower() in BACKGROUND:
                return i
        return None
    return 0


def _to_output(plane: np.ndarray, h: int, w: int) -> np.ndarray:
    """An input-resolution region as output pixels: those at least half covered, else the
    one nearest the region's centre."""
    share = cv2.resize(plane, (w, h), interpolation=cv2.INTER_AREA)
    region = share >= 0.5
    if not region.any() and plane.any():
        ys, xs = np.nonzero(plane)
        y = min(h - 1, int(ys.mean() * h / plane.shape[0]))
        x = min(w - 1, int(xs.mean() * w / plane.shape[1]))
        region[y, x] = True
    return region
