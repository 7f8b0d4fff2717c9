"""Group-CAM (Zhang, Wang et al., "Group-CAM: Group Score-Weighted Visual Explanations for Deep
Convolutional Networks", 2021, https://arxiv.org/abs/2103.13859)::

    S_g = ReLU(Σ_{k ∈ g} A_k),  S_g ← S_g · [S_g > P70(S_g)]     # G groups of channels
    M_g = minmax(Up(S_g))
    s_g = f(x ⊙ M_g + B ⊙ (1 - M_g)) - f(B),   B = blur(x)
    L   = ReLU(Σ_g s_g M_g) / max

The channels are split into ``G`` consecutive groups (``--groups``, default 32; as
``torch.chunk``: groups of ``ceil(K / G)``), each group's summed map is thresholded at its 70th
percentile at feature resolution, upsampled and min-max normalised, and the image is kept where
the mask is and blurred elsewhere (the paper's Gaussian blur, kernel 51 and σ 50 at 224 pixels,
scaled to the input's shorter side). One pass per group plus the blurred image: tens of passes
instead of Score-CAM's hundreds. A group whose mask is constant is skipped (weight 0).

The paper weights each channel by its average gradient before grouping; onnxcam has no
gradients, so the channels are summed as they are (every weight 1) and the masks are the same
for every target.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import ops
from .base import AllTargets, Clean, Options, Plan, TargetMap, knob, sum_masks

__all__ = ["GroupCam", "GroupCamOptions", "group_maps"]

BLUR_KERNEL = 51 / 224  # the paper's blur, as fractions of a 224-pixel side
BLUR_SIGMA = 50 / 224


@dataclass(frozen=True)
class GroupCamOptions(Options):
    """How channels are grouped and thresholded."""

    groups: int = knob(32, flag="--groups", minimum=1, help="channel groups, one pass each")
    percentile: float = knob(70.0, minimum=0.0, maximum=100.0)


def group_maps(acts: np.ndarray, groups: int, percentile: float) -> np.ndarray:
    """The thresholded group sums ``S_g`` at feature resolution, (G, h, w) float64."""
    k = acts.shape[0]
    size = -(-k // groups)  # torch.chunk: groups of ceil(K / G)
    maps = []
    for start in range(0, k, size):
        summed = np.maximum(acts[start : start + size].astype(np.float64).sum(axis=0), 0.0)
        threshold = np.percentile(summed, percentile)
        maps.append(np.where(summed > threshold, summed, 0.0))
    return np.stack(maps)


class GroupCam(AllTargets):
    """Group-CAM with gradient-free groups (see the module docstring)."""

    name = "groupcam"
    options_type = GroupCamOptions
    presets: ClassVar[Mapping[str, GroupCamOptions]] = {"official": GroupCamOptions()}
    settings: GroupCamOptions

    def plan(self, clean: Clean) -> Plan:
        maps = group_maps(clean.acts, self.settings.groups, self.settings.percentile)
        flat = maps.reshape(len(maps), -1)
        active = maps[flat.max(axis=1) > flat.min(axis=1)]
        side = min(clean.size)
        kernel = 2 * round(BLUR_KERNEL * side / 2) + 1
        blurred = ops.blur(clean.x, clean.spec.layout, sigma=BLUR_SIGMA * side, ksize=kernel)

        def inputs(chunk: int) -> Iterator[np.ndarray]:
            yield blurred
            for masks in _masks(active, clean.size, chunk):
                yield ops.mix(blurred, clean.x, masks, clean.spec.layout)

        stats = {
            "channels_total": int(clean.acts.shape[0]),
            "groups": len(maps),
            "groups_skipped": len(maps) - len(active),
            "masked_passes": len(active) + 1,
        }
        return Plan(len(active) + 1, inputs, stats, active)

    def combine_many(
        self, clean: Clean, plan: Plan, scores: np.ndarray, clean_scores: list[float]
    ) -> list[TargetMap]:
        active: np.ndarray = plan.state
        if len(active) == 0:
            return [TargetMap(np.zeros(clean.size, np.float32)) for _ in clean_scores]
        weights = scores[1:] - scores[:1]
        summed = sum_masks(_masks(active, clean.size, 16), weights)
        return [TargetMap(ops.saliency_map(s, clean.size)) for s in summed]


def _masks(maps: np.ndarray, size: tuple[int, int], chunk: int) -> Iterator[np.ndarray]:
    """``M_g = minmax(Up(S_g))``, ``chunk`` at a time, (n, H, W) float32."""
    for start in range(0, len(maps), chunk):
        yield ops.minmax(ops.upsample(maps[start : start + chunk], size))
