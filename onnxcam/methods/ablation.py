"""Ablation-CAM (Desai and Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional
Network via Gradient-free Localization", WACV 2020)::

    y_k = f(head(A with channel k ablated))              # one head pass per channel
    w_k = (y - y_k) / y          (weight "relative": pytorch-grad-cam, the paper in practice)
    w_k = (y - y_k) / ‖A_k‖₂     (weight "norm": the paper's definition)
    L   = ReLU(Σ_k w_k Up(A_k)) / max

Only the model's head after the node runs (its cost is measured in BENCHMARKS.md): the
ablated feature maps go straight into it, the rest of the model is not run again. ``y`` is
the target's clean score; a class target scores the logit, as the paper and pytorch-grad-cam
do. A channel ablates to 0; a channel that is 0 everywhere already cannot change ``y`` and is
skipped (weight 0, counted). ``relative`` divides by ``|y|`` (the sign of ``w_k`` then always
means "the score falls without the channel"; for ``y`` > 0, as for a predicted class's logit,
this is the formula), and by nothing when ``y`` is 0.

The ``grad-cam`` preset reproduces pytorch-grad-cam's ``AblationCAM``: ``(y - y_k) / y`` as
written; an ablated channel becomes 0 when the node's minimum is 0, and otherwise that minimum
minus 10⁷ (pytorch-grad-cam lowers it again for every channel of a batch; onnxcam uses one
value); and its maps (``ReLU``, min-max at feature resolution, resize, min-max).

With several nodes each node's channels make a map of their own, and the maps are fused as
equals (:func:`onnxcam.methods.base.fuse_nodes`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import GRAD_CAM_MAP, Clean, MapOptions, Method, Plan, TargetMap, fuse_nodes, knob

__all__ = ["Ablation", "AblationOptions", "ablation_value"]

WEIGHTS = ("relative", "norm")
VALUES = ("zero", "grad-cam")
GRAD_CAM_OFFSET = 1e7


@dataclass(frozen=True)
class AblationOptions(MapOptions):
    """``weight`` (``relative`` or ``norm``), whether ``relative`` divides by ``y`` as written
    (``signed``) or by ``|y|``, what an ablated channel becomes (``zero``, or pytorch-grad-cam's
    rule) and what a class target scores (``logit`` or ``probability``)."""

    weight: str = knob(
        "relative",
        flag="--ablation-weight",
        choices=WEIGHTS,
        help="(y - y_k) / y (relative) or the paper's (y - y_k) / |A_k| (norm)",
    )
    signed: bool = False
    value: str = knob("zero", choices=VALUES)
    score: str = knob("logit", choices=("logit", "probability"))


def ablation_value(feature: np.ndarray, rule: str) -> float:
    """What an ablated channel of this node's map becomes."""
    low = float(feature.min())
    return 0.0 if rule == "zero" or low == 0.0 else low - GRAD_CAM_OFFSET


class Ablation(Method):
    """Ablation-CAM on the head alone (see the module docstring)."""

    name = "ablation"
    space = "head"
    options_type = AblationOptions
    presets: ClassVar[Mapping[str, AblationOptions]] = {
        "official": AblationOptions(),
        "grad-cam": AblationOptions(signed=True, value="grad-cam", **GRAD_CAM_MAP),
    }
    settings: AblationOptions

    def __init__(self, options: AblationOptions | None = None, *, baseline: str = "none"):
        super().__init__(options, baseline=baseline)
        self.score_kind = self.settings.score

    def plan(self, clean: Clean) -> Plan:
        features = clean.features
        values = [ablation_value(f, self.settings.value) for f in features]
        # (node, channel) of every channel that ablation changes, in stacking order
        run = [
            (i, j)
            for i, f in enumerate(features)
            for j in range(f.shape[0])
            if np.any(f[j] != values[i])
        ]

        def inputs(chunk: int) -> Iterator[tuple[np.ndarray, ...]]:
            for start in range(0, len(run), chunk):
                part = run[start : start + chunk]
                block = [np.repeat(f[None], len(part), axis=0) for f in features]
                for row, (i, j) in enumerate(part):
                    block[i][row, j] = values[i]
                yield tuple(block)

        total = sum(f.shape[0] for f in features)
        offsets = np.cumsum([0, *(f.shape[0] for f in features)])[:-1]
        channels = np.array([offsets[i] + j for i, j in run], np.int64)
        norms = np.array([np.linalg.norm(features[i][j].astype(np.float64)) for i, j in run])
        stats = {
            "channels_total": int(total),
            "channels_used": len(run),
            "channels_skipped": int(total - len(run)),
            "masked_passes": 0,
            "head_passes": len(run),
        }
        return Plan(len(run), inputs, stats, (channels, norms))

    def combine(
        self, clean: Clean, plan: Plan, scores: np.ndarray, clean_score: float
    ) -> TargetMap:
        channels, norms = plan.state
        drop = clean_score - scores.astype(np.float64)
        weights = np.zeros(clean.acts.shape[0])
        if self.settings.weight == "norm":  # a channel that runs is not all zero: norm > 0
            weights[channels] = drop / norms
        elif self.settings.signed and clean_score != 0.0:
            weights[channels] = drop / clean_score
        else:
            weights[channels] = drop / (abs(clean_score) or 1.0)
        acts = clean.acts.astype(np.float64)
        return TargetMap(
            fuse_nodes(
                clean,
                lambda ch: self.settings.to_map(
                    np.tensordot(weights[ch], acts[ch], axes=1), clean.size
                ),
            )
        )
