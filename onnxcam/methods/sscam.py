"""SS-CAM: Smoothed Score-CAM (Wang, Naidu et al., "SS-CAM: Smoothed Score-CAM for Sharper Visual
Feature Localization", 2020, https://arxiv.org/abs/2006.14255)::

    M_k   = minmax(Up(A_k))                            # Score-CAM's masks
    s_k   = 1/N Σ_i f(x ⊙ (M_k + δ_ik)) - f(X_b),  δ_ik ~ N(0, σ²) per pixel
    L     = ReLU(Σ_k s_k · Up(A_k)) / max

Every mask is scored ``N`` times (``--samples``, default 35) with Gaussian noise of standard
deviation σ (``--noise``, default 2.0, on masks in [0, 1]; the paper's and torchcam's values)
added pixel by pixel; the channel's score is the mean. The noise is drawn from
``seed`` and the repeat's number, in mask order, so the map does not depend on the batch
size. Everything else (channel bookkeeping, baselines, presets) is Score-CAM's; the
``torchcam`` preset scores as torchcam's ``SSCAM`` (logit minus the clean logit, softmax across
channels, masks normalised before upsampling), with its own random numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from .base import knob
from .scorecam import COMPAT, ScoreCam, ScoreCamOptions

__all__ = ["SSCam", "SmoothOptions"]


@dataclass(frozen=True)
class SmoothOptions(ScoreCamOptions):
    """Score-CAM's options plus the noise."""

    samples: int = knob(35, flag="--samples", minimum=1, help="noisy copies of every mask")
    # A std far beyond the masks' 0..1 drowns them long before 1000; the bound keeps the
    # noise finite in float32.
    noise: float = knob(
        2.0, flag="--noise", minimum=0.0, maximum=1e3, help="std of the noise on the masks"
    )
    seed: int = knob(0, flag="--seed", minimum=0, help="seed of the noise")


class SSCam(ScoreCam):
    """Score-CAM whose masks are scored ``samples`` times under Gaussian noise."""

    name = "sscam"
    options_type = SmoothOptions
    presets: ClassVar[Mapping[str, SmoothOptions]] = {
        "official": SmoothOptions(),
        "torchcam": SmoothOptions(**asdict(COMPAT["torchcam"])),
    }
    settings: SmoothOptions
    takes_budget = False  # every mask runs several times: no best-first order

    def repeats(self) -> int:
        return self.settings.samples

    def perturb(self, masks: np.ndarray, repeat: int, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal(masks.shape, dtype=np.float32)
        return masks + np.float32(self.settings.noise) * noise

    def _generator(self, repeat: int) -> np.random.Generator:
        return np.random.default_rng((self.settings.seed, repeat))
