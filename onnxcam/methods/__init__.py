"""Saliency methods behind one protocol (:class:`Method`), and their registry."""

from __future__ import annotations

from ..errors import ConfigError
from .activation import ActivationMap
from .base import Clean, Method, Plan, TargetMap
from .scorecam import COMPAT, ScoreCam, ScoreCamOptions

__all__ = [
    "COMPAT",
    "METHODS",
    "Clean",
    "Method",
    "Plan",
    "ScoreCamOptions",
    "TargetMap",
    "create",
]

#: Method names and their classes; adding a method is one module and one line here.
METHODS: dict[str, type[Method]] = {
    ScoreCam.name: ScoreCam,
    ActivationMap.name: ActivationMap,
}


def create(
    name: str, *, options: ScoreCamOptions, baseline: str, budget_s: float | None = None
) -> Method:
    """The method ``name`` with the explainer's settings.

    Raises:
        ConfigError: unknown name, or settings the method does not take.
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'; valid: {', '.join(METHODS)}")
    return METHODS[name].from_settings(options=options, baseline=baseline, budget_s=budget_s)
