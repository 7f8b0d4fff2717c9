"""Recipro-CAM (Byun and Lee, "Recipro-CAM: Fast gradient-free visual explanations for
convolutional neural networks", 2022, https://arxiv.org/abs/2209.14074)::

    s(i, j) = f(head(A ⊙ 1_ij))                          # the map kept at one cell only
    L       = Up(minmax(s))

One head pass per cell of the feature map (h·w passes; 49 for a 7×7 map), each fed the
activations with every cell but ``(i, j)`` set to 0, as OpenVINO XAI's ``ReciproCAM`` builds
its mosaic; the map is the target's score of each pass, min-max normalised at feature
resolution and upsampled. Only the model's head after the node runs. With several nodes the
cells are those of the finest grid, and a coarser node keeps the cell that contains the fine
cell's centre.

``--kernel gaussian`` keeps, instead of the one cell, its 3×3 neighbourhood weighted by
``[[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16`` (cut at the map's border), the mosaic the authors'
code offers and OpenVINO XAI's ViT Recipro-CAM uses by default.

On a token map (a vision transformer) the prefix tokens (class, distillation, registers) keep
their clean values in every pass; only the patch tokens are masked. ``--compat openvino`` is
OpenVINO XAI 1.1's ``ViTReciproCAM`` with its defaults: with ``--node auto`` the mosaic is fed
at two tensors, the last block's input (on the residual path) and its normalised copy (what
the block's attention reads), each masked from its own clean values; the Gaussian mosaic; the
raw logit. OpenVINO XAI cuts the patch tokens as ``[1 : h·w + 1]`` (one prefix token); the
prefix is read from the graph here, so DeiT's and DINOv2's maps are right where its are not.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import ops
from .base import Clean, Method, Options, Plan, TargetMap, knob

__all__ = ["KERNELS", "Recipro", "ReciproOptions", "mosaic"]

KERNELS = ("onehot", "gaussian")
_GAUSSIAN = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float64) / 16.0


@dataclass(frozen=True)
class ReciproOptions(Options):
    """``kernel``: the mask of each cell (see the module docstring); ``score``: what a class
    target scores; ``cut``: with ``--node auto`` on a vision transformer, ``block`` feeds the
    mosaic at the last block's input and at its normalised copy (the two tensors OpenVINO XAI's
    ``ViTReciproCAM`` substitutes), ``node`` at the auto node alone."""

    kernel: str = knob(
        "onehot", flag="--kernel", choices=KERNELS,
        help="the mask of each cell: that cell alone, or a 3×3 Gaussian around it",
    )  # fmt: skip
    score: str = knob("probability", choices=("probability", "logit"))
    cut: str = knob("node", choices=("node", "block"))


def mosaic(h: int, w: int, rows: np.ndarray, cols: np.ndarray, kernel: str) -> np.ndarray:
    """The mask of each cell ``(rows[p], cols[q])`` of an ``h × w`` grid, in the order of
    ``p`` then ``q``: (len(rows)·len(cols), h, w) float32."""
    masks = np.zeros((len(rows) * len(cols), h, w), np.float32)
    for n, (r, c) in enumerate((r, c) for r in rows for c in cols):
        if kernel == "onehot":
            masks[n, r, c] = 1.0
            continue
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if 0 <= r + dr < h and 0 <= c + dc < w:
                    masks[n, r + dr, c + dc] = _GAUSSIAN[dr + 1, dc + 1]
    return masks


class Recipro(Method):
    """Recipro-CAM on the head alone (see the module docstring)."""

    name = "recipro"
    space = "head"
    options_type = ReciproOptions
    presets: ClassVar[Mapping[str, ReciproOptions]] = {
        "official": ReciproOptions(),
        # OpenVINO XAI 1.1's ReciproCAM / ViTReciproCAM with their defaults: raw logits; on
        # a vision transformer the Gaussian mosaic, fed at the last block's input and norm1
        "openvino": ReciproOptions(kernel="gaussian", score="logit", cut="block"),
    }
    settings: ReciproOptions

    def __init__(self, options: ReciproOptions | None = None, *, baseline: str = "none"):
        super().__init__(options, baseline=baseline)
        self.score_kind = self.settings.score

    def plan(self, clean: Clean) -> Plan:
        features = clean.features
        h, w = clean.acts.shape[1:]
        cells = [(p, q) for p in range(h) for q in range(w)]
        # per node: the cell of its own grid that holds the centre of each fine cell
        where = [
            (
                ((np.arange(h) + 0.5) * f.shape[1] / h).astype(np.int64),
                ((np.arange(w) + 0.5) * f.shape[2] / w).astype(np.int64),
            )
            for f in features
        ]

        gaussian = self.settings.kernel == "gaussian"
        masks = [mosaic(f.shape[1], f.shape[2], rows, cols, "gaussian") for f, (rows, cols) in
                 zip(features, where, strict=True)] if gaussian else []  # fmt: skip

        def inputs(chunk: int) -> Iterator[tuple[np.ndarray, ...]]:
            for start in range(0, len(cells), chunk):
                part = cells[start : start + chunk]
                block = []
                for i, (f, (rows, cols)) in enumerate(zip(features, where, strict=True)):
                    if gaussian:  # each cell's neighbourhood, weighted
                        picked = masks[i][[p * w + q for p, q in part]]
                        block.append((f[None] * picked[:, None]).astype(f.dtype))
                        continue
                    kept = np.zeros((len(part), *f.shape), f.dtype)
                    for n, (p, q) in enumerate(part):
                        kept[n, :, rows[p], cols[q]] = f[:, rows[p], cols[q]]
                    block.append(kept)
                yield tuple(block)

        stats = {
            "channels_total": int(clean.acts.shape[0]),
            "masked_passes": 0,
            "head_passes": len(cells),
        }
        return Plan(len(cells), inputs, stats)

    def combine(
        self, clean: Clean, plan: Plan, scores: np.ndarray, clean_score: float
    ) -> TargetMap:
        grid = scores.astype(np.float64).reshape(clean.acts.shape[1:])
        return TargetMap(ops.saliency_map(grid, clean.size, at="feature", relu=False))
