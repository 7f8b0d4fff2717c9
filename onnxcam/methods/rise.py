"""RISE (Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
Models", BMVC 2018, https://arxiv.org/abs/1806.07421), and D-RISE for detectors (Petsiuk et
al., "Black-box Explanation of Object Detectors via Saliency Maps", CVPR 2021)::

    G_i ~ Bernoulli(p)^{s × s}                           # a coarse random grid per mask
    M_i = crop_{dy,dx}(Up(G_i))                          # smooth, randomly shifted
    S   = 1 / (N p) Σ_i (f(x ⊙ M_i) - f̄) · M_i           # f̄: the mean score of the masks
    L   = minmax(S)

``N`` masks (``--samples``, default 4,000) from ``s × s`` grids (``--cells``, default 7) whose
cells are kept with probability ``p`` (``--keep``, default 0.5); each grid is upsampled
bilinearly to ``(s + 1)`` cells of ``ceil(H / s) × ceil(W / s)`` pixels and cropped to the input
at a random offset within one cell, as in the paper. The grids and the offsets come from two
generators seeded by ``--seed`` and are drawn mask by mask, so the masks do not depend on the
batch size; they are drawn again (never stored) to add up the map.

For detection targets RISE is D-RISE: a detection target left at its default mode scores an
object by D-RISE's similarity (IoU with its box × objectness × cosine of the class vectors,
``onnxcam.targets.detection``), and ``S`` weights the masks by it. Nothing here is specific to
a target kind. Subtracting the mean score ``f̄`` changes the paper's ``S`` by ``f̄`` times the
masks' coverage of each pixel, which is constant in expectation (min-max normalisation removes
it) but not for a finite ``N``: without it, a model that ignores the image would get the
coverage's noise as its map; with it, that map is all zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import ops
from .base import AllTargets, Clean, Options, Plan, TargetMap, knob, sum_masks

__all__ = ["Rise", "RiseOptions", "rise_masks"]

BLOCK = 64  # masks made at a time when adding up the map


@dataclass(frozen=True)
class RiseOptions(Options):
    """The random masks."""

    samples: int = knob(4000, flag="--samples", minimum=1, help="random masks")
    # RISE uses 7 cells a side, D-RISE 16; each mask's grid is drawn at cells x cells, which
    # the bound keeps small (half a megabyte a mask at 256).
    cells: int = knob(
        7, flag="--cells", minimum=1, maximum=256, help="grid cells per side of a mask"
    )
    keep: float = knob(0.5, flag="--keep", above=0.0, maximum=1.0, help="share of cells kept")
    seed: int = knob(0, flag="--seed", minimum=0, help="seed of the masks")


def rise_masks(options: RiseOptions, size: tuple[int, int], chunk: int) -> Iterator[np.ndarray]:
    """The ``samples`` masks, at most ``chunk`` at a time, (n, H, W) float32 in [0, 1]."""
    height, width = size
    s = options.cells
    cell_h, cell_w = math.ceil(height / s), math.ceil(width / s)
    grids_rng, shifts_rng = (np.random.default_rng(seq) for seq in _seeds(options.seed))
    for start in range(0, options.samples, chunk):
        n = min(chunk, options.samples - start)
        grids = (grids_rng.random((n, s, s)) < options.keep).astype(np.float32)
        shifts = shifts_rng.integers(0, (cell_h, cell_w), size=(n, 2))
        up = ops.upsample(grids, ((s + 1) * cell_h, (s + 1) * cell_w))
        yield np.stack(
            [up[i, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(shifts)]
        )


def _seeds(seed: int) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence(seed).spawn(2)


class Rise(AllTargets):
    """RISE, or D-RISE for detection targets (see the module docstring)."""

    name = "rise"
    detection_mode = "drise"
    options_type = RiseOptions
    presets: ClassVar[Mapping[str, RiseOptions]] = {"official": RiseOptions()}
    settings: RiseOptions

    def plan(self, clean: Clean) -> Plan:
        def inputs(chunk: int) -> Iterator[np.ndarray]:
            for masks in rise_masks(self.settings, clean.size, chunk):
                yield ops.apply_masks(clean.x, masks, clean.spec.layout)

        stats = {"masked_passes": self.settings.samples}
        return Plan(self.settings.samples, inputs, stats)

    def combine_many(
        self, clean: Clean, plan: Plan, scores: np.ndarray, clean_scores: list[float]
    ) -> list[TargetMap]:
        mean = scores.mean(axis=0, dtype=np.float64)
        flat = np.ptp(scores, axis=0) <= 1e-9 * np.maximum(1.0, np.abs(mean))
        masks = rise_masks(self.settings, clean.size, BLOCK)
        summed = sum_masks(masks, scores - mean) / (self.settings.samples * self.settings.keep)
        return [
            TargetMap(np.zeros(clean.size, np.float32) if still else ops.minmax(s[None])[0])
            for s, still in zip(summed, flat, strict=True)
        ]
