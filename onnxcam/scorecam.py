"""The import path of Score-CAM's options since the first release; the method itself lives in
:mod:`onnxcam.methods.scorecam`."""

from __future__ import annotations

from .methods.scorecam import BASELINES, COMPAT, RANKS, SCORES, ScoreCamOptions

__all__ = ["BASELINES", "COMPAT", "RANKS", "SCORES", "ScoreCamOptions"]
