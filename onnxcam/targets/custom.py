"""Any Python callable as a target (API only; the command line takes specs, never code).

``fn(outputs) -> (B,)``: ``outputs`` maps every model output name to its ``(B, ...)`` array;
the callable returns one number per sample. It is checked on the clean image when it binds
and on every batch after that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import BindContext, Outputs, Target, TargetSpec, checked_scores

__all__ = ["CallableSpec", "CallableTarget"]


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


@dataclass(frozen=True)
class CallableTarget:
    """A user's callable, reading every output."""

    fn: Callable[[Outputs], Any]
    outputs: tuple[str, ...]
    record: dict[str, Any]

    def __call__(self, outputs: Outputs) -> np.ndarray:
        return np.asarray(self.fn(outputs))

    def describe(self) -> dict[str, Any]:
        return dict(self.record)


@dataclass(frozen=True)
class CallableSpec(TargetSpec):
    """Wraps a callable ``outputs -> (B,)`` as a target spec."""

    fn: Callable[[Outputs], Any] | None = None

    kind: ClassVar[str] = "callable"

    @property
    def spec(self) -> str:
        return f"callable:{_name(self.fn) if self.fn is not None else '?'}"

    def bind(self, ctx: BindContext, clean: Outputs) -> list[Target]:
        assert self.fn is not None
        record: dict[str, Any] = {
            "kind": self.kind,
            "spec": self.spec,
            "class_index": None,
            "label": None,
        }
        target = CallableTarget(self.fn, tuple(clean), {**record, "score": 0.0, "summary": ""})
        score = float(checked_scores(target, clean, 1)[0])
        record.update(score=score, summary=f"{self.spec} = {score:.4g}")
        return [CallableTarget(self.fn, tuple(clean), record)]
