"""CAM (Zhou, Khosla et al., "Learning Deep Features for Discriminative Localization", CVPR 2016,
https://arxiv.org/abs/1512.04150)::

    y = act(W · GAP(A) + b)                              # the head, read from the graph
    s(i, j) = f(act(W A(:, i, j) + b)) - f(act(b))
    L = ReLU(Up(s)) / max

For a head of global average pooling and a linear layer (Gemm, or MatMul + Add, with
Flatten/Reshape/Squeeze between; :func:`onnxcam.graph.linear_head`), a class target's logit
decomposes over the cells: ``s(i, j) = Σ_k w_ck A_k(i, j)``, the classic CAM. onnxcam computes
it for any target the same way, without a pass: the target scores, in numpy, the outputs the
head would give if every cell held cell ``(i, j)``'s activations, minus those of an all-zero
map (for a class logit that is exactly ``Σ_k w_ck A_k(i, j)``; a probability or a cosine gets
the same treatment). A class target scores the logit, as in the paper. A head of another form
is refused with what was found instead. The ``torchcam`` preset reproduces torchcam's ``CAM``
(min-max at feature resolution, no ReLU, eps 1e-8, then upsampled).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import ConfigError
from .base import Clean, MapOptions, Method, Plan, TargetMap

__all__ = ["Cam", "CamOptions"]


@dataclass(frozen=True)
class CamOptions(MapOptions):
    """How the cell scores become the map."""


class Cam(Method):
    """CAM from the weights of a global-average-pooling + linear head (no passes)."""

    name = "cam"
    space = "linear"
    score_kind = "logit"
    options_type = CamOptions
    presets: ClassVar[Mapping[str, CamOptions]] = {
        "official": CamOptions(),
        "torchcam": CamOptions(combine_at="feature", relu=False, cam_eps=1e-8),
    }
    settings: CamOptions

    def plan(self, clean: Clean) -> Plan:
        if len(clean.features) > 1:
            raise ConfigError(f"method '{self.name}' reads the head of one node; pass one --node")
        k = clean.acts.shape[0]
        cells = clean.acts.reshape(k, -1).T
        rows = np.concatenate([np.zeros((1, k), cells.dtype), cells])

        def inputs(chunk: int) -> Iterator[np.ndarray]:
            for start in range(0, len(rows), chunk):
                yield rows[start : start + chunk]

        stats = {"channels_total": int(k), "masked_passes": 0, "head_passes": 0}
        return Plan(len(rows), inputs, stats)

    def combine(
        self, clean: Clean, plan: Plan, scores: np.ndarray, clean_score: float
    ) -> TargetMap:
        cells = (scores[1:] - scores[0]).astype(np.float64).reshape(clean.acts.shape[1:])
        return TargetMap(self.settings.to_map(cells, clean.size))
