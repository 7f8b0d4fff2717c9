"""Saliency methods behind one protocol (:class:`Method`), and their registry."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .ablation import Ablation, AblationOptions
from .activation import ActivationMap
from .base import Clean, MapOptions, Method, Options, Plan, TargetMap
from .cam import Cam, CamOptions
from .eigencam import EigenCam, EigenCamOptions
from .groupcam import GroupCam, GroupCamOptions
from .iscam import IntegratedOptions, ISCam
from .recipro import Recipro, ReciproOptions
from .rise import Rise, RiseOptions
from .scorecam import COMPAT, ScoreCam, ScoreCamOptions
from .sscam import SmoothOptions, SSCam

__all__ = [
    "COMPAT",
    "METHODS",
    "AblationOptions",
    "CamOptions",
    "Clean",
    "EigenCamOptions",
    "GroupCamOptions",
    "IntegratedOptions",
    "MapOptions",
    "Method",
    "Options",
    "Plan",
    "ReciproOptions",
    "RiseOptions",
    "ScoreCamOptions",
    "SmoothOptions",
    "TargetMap",
    "create",
]

#: Method names and their classes; adding a method is one module and one line here.
METHODS: dict[str, type[Method]] = {
    ScoreCam.name: ScoreCam,
    SSCam.name: SSCam,
    ISCam.name: ISCam,
    GroupCam.name: GroupCam,
    Ablation.name: Ablation,
    Recipro.name: Recipro,
    Cam.name: Cam,
    EigenCam.name: EigenCam,
    Rise.name: Rise,
    ActivationMap.name: ActivationMap,
}


def create(
    name: str, *, options: Any = None, baseline: str = "none", budget_s: float | None = None
) -> Method:
    """The method ``name`` with the explainer's settings (``options`` None: its default).

    Raises:
        ConfigError: unknown name, or settings the method does not take.
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'; valid: {', '.join(METHODS)}")
    return METHODS[name].from_settings(options=options, baseline=baseline, budget_s=budget_s)
