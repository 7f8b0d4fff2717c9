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
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .. import ops
from .base import Clean, Method, Plan, TargetMap

__all__ = ["Recipro"]


class Recipro(Method):
    """Recipro-CAM on the head alone (see the module docstring)."""

    name = "recipro"
    space = "head"

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

        def inputs(chunk: int) -> Iterator[tuple[np.ndarray, ...]]:
            for start in range(0, len(cells), chunk):
                part = cells[start : start + chunk]
                block = []
                for f, (rows, cols) in zip(features, where, strict=True):
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
