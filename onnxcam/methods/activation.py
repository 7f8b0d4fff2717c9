"""The mean activation map: a class-agnostic reference that needs no passes::

    L = minmax(Up(mean_k A_k))

It shows where the node fires at all, whatever the target; ``onnxcam evaluate`` uses it as
the reference a class-specific method has to beat.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from .base import Clean, Method, Plan, TargetMap, fuse_nodes

__all__ = ["ActivationMap"]


class ActivationMap(Method):
    """The mean of the node's channels, upsampled and min-max normalised."""

    name = "activation"
    class_specific = False

    def plan(self, clean: Clean) -> Plan:
        return Plan(0, stats={"channels_total": int(clean.acts.shape[0]), "masked_passes": 0})

    def combine(
        self, clean: Clean, plan: Plan, scores: np.ndarray, clean_score: float
    ) -> TargetMap:
        def one(channels: slice) -> np.ndarray:
            mean = clean.acts[channels].mean(axis=0, dtype=np.float64)
            return ops.minmax(ops.upsample(mean, clean.size)[None])[0]

        return TargetMap(fuse_nodes(clean, one))
