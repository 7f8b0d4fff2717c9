"""Eigen-CAM (Muhammad and Yeasin, "Eigen-CAM: Class Activation Map using Principal Components",
IJCNN 2020, https://arxiv.org/abs/2008.00299)::

    X = [A_1 ... A_K] (h·w × K), centred per channel: X ← X - mean_rows(X)
    X = U Σ Vᵀ,  P = X v_1                               # the first principal component
    P ← -P when corr(P, mean_k A_k) < 0                  # SVD's sign is arbitrary
    L = ReLU(Up(P)) / max

No passes: the map is read from the activations alone, so it is the same for every target
(class-agnostic; the record says so). The sign of a singular vector is arbitrary; onnxcam turns
the projection so that it correlates positively with the mean activation. The ``grad-cam``
preset reproduces pytorch-grad-cam's ``EigenCAM``: the sign as LAPACK returns it, and its maps
(``ReLU``, min-max at feature resolution, resize, min-max). With several nodes, each node's
first component makes a map and the maps are fused as equals (``fuse_nodes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import GRAD_CAM_MAP, Clean, MapOptions, Method, Plan, TargetMap, fuse_nodes, knob

__all__ = ["EigenCam", "EigenCamOptions", "principal_projection"]

SIGNS = ("mean", "svd")


@dataclass(frozen=True)
class EigenCamOptions(MapOptions):
    """``sign``: ``mean`` (positive correlation with the mean activation) or ``svd`` (as
    LAPACK returns it, as pytorch-grad-cam does)."""

    sign: str = knob("mean", choices=SIGNS)


def principal_projection(acts: np.ndarray, *, sign: str = "mean") -> np.ndarray:
    """The activations (K, h, w) projected on their first principal component, (h, w)."""
    k = acts.shape[0]
    rows = acts.reshape(k, -1).T.astype(np.float32)  # float32, as pytorch-grad-cam's SVD
    rows = rows - rows.mean(axis=0)
    _, _, vt = np.linalg.svd(rows, full_matrices=False)
    projection = (rows @ vt[0]).astype(np.float64)
    if sign == "mean":
        mean = acts.reshape(k, -1).mean(axis=0, dtype=np.float64)
        if float(np.dot(projection - projection.mean(), mean - mean.mean())) < 0:
            projection = -projection
    return projection.reshape(acts.shape[1:])


class EigenCam(Method):
    """The first principal component of the activations (no passes, class-agnostic)."""

    name = "eigencam"
    class_specific = False
    options_type = EigenCamOptions
    presets: ClassVar[Mapping[str, EigenCamOptions]] = {
        "official": EigenCamOptions(),
        "grad-cam": EigenCamOptions(sign="svd", **GRAD_CAM_MAP),
    }
    settings: EigenCamOptions

    def plan(self, clean: Clean) -> Plan:
        def one(channels: slice) -> np.ndarray:
            projection = principal_projection(clean.acts[channels], sign=self.settings.sign)
            return self.settings.to_map(projection, clean.size)

        cam = fuse_nodes(clean, one)
        stats = {"channels_total": int(clean.acts.shape[0]), "masked_passes": 0}
        return Plan(0, stats=stats, state=cam)

    def combine(
        self, clean: Clean, plan: Plan, scores: np.ndarray, clean_score: float
    ) -> TargetMap:
        return TargetMap(plan.state)
