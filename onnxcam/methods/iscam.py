"""IS-CAM: Integrated Score-CAM (Naidu, Ghosh et al., "IS-CAM: Integrated Score-CAM for
axiomatic-based explanations", 2020, https://arxiv.org/abs/2010.03023)::

    M_k = minmax(Up(A_k))                              # Score-CAM's masks
    c_i = Σ_{j=1..i} j / N                             # i = 1..N along the path
    s_k = 1/N Σ_i f(x ⊙ c_i M_k) - f(X_b)
    L   = ReLU(Σ_k s_k · Up(A_k)) / max

Every mask is scored ``N`` times (``--samples``, default 10) scaled by the integration
coefficients ``c_i``, which accumulate as in the paper's sum and torchcam's ``ISCAM`` (they
pass 1 from ``i ≈ 1.4 √N`` on: the path amplifies the masked image). Everything else is
Score-CAM's; the ``torchcam`` preset reproduces torchcam's ``ISCAM`` exactly (logit minus the
clean logit, softmax across channels, masks normalised before upsampling).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from .base import knob
from .scorecam import COMPAT, ScoreCam, ScoreCamOptions

__all__ = ["ISCam", "IntegratedOptions", "coefficients"]


@dataclass(frozen=True)
class IntegratedOptions(ScoreCamOptions):
    """Score-CAM's options plus the number of integration steps."""

    samples: int = knob(10, flag="--samples", minimum=1, help="integration steps per mask")


def coefficients(steps: int) -> np.ndarray:
    """``c_i = Σ_{j=1..i} j / N`` for ``i = 1..N``."""
    i = np.arange(1, steps + 1, dtype=np.float64)
    return i * (i + 1) / (2 * steps)


class ISCam(ScoreCam):
    """Score-CAM whose masks are scored along the integration path."""

    name = "iscam"
    options_type = IntegratedOptions
    presets: ClassVar[Mapping[str, IntegratedOptions]] = {
        "official": IntegratedOptions(),
        "torchcam": IntegratedOptions(**asdict(COMPAT["torchcam"])),
    }
    settings: IntegratedOptions
    takes_budget = False  # every mask runs several times: no best-first order

    def repeats(self) -> int:
        return self.settings.samples

    def perturb(self, masks: np.ndarray, repeat: int, rng: np.random.Generator) -> np.ndarray:
        # coefficients(N)[repeat], the same float64 arithmetic without building all N of them
        # for every repeat (quadratic, and N floats at once: --samples 10**12 asked 7 TiB).
        i, steps = repeat + 1, self.settings.samples
        return masks * np.float32(i * (i + 1) / (2 * steps))
