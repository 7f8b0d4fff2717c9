"""Index targets: ``index:at=i,j,...[:output=NAME][:act=none|sigmoid|softmax]``.

One element of one output, indexed after the batch axis, what a hand-written
``lambda out: out[:, c, h, w]`` does (a YOLO cell, a segmentation pixel, a regression value)::

    f(x) = act(y)[b, i, j, ...]

``act`` is applied to the whole output first: ``sigmoid`` elementwise, ``softmax`` along
axis 1 (the class axis of ``(B, C, ...)`` outputs), ``none`` keeps the raw value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from .base import (
    BindContext,
    Key,
    Outputs,
    OutputTarget,
    Target,
    TargetSpec,
    describe_outputs,
    sigmoid,
    softmax,
)

__all__ = ["ACTS", "IndexSpec", "IndexTarget"]

ACTS = ("none", "sigmoid", "softmax")


def _indices(text: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in text.split(","))
    if not values or min(values) < 0:
        raise ValueError(text)
    return values


def _show_indices(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def _act(text: str) -> str:
    if text not in ACTS:
        raise ValueError(text)
    return text


def _activate(value: np.ndarray, act: str) -> np.ndarray:
    if act == "sigmoid":
        return sigmoid(value)
    if act == "softmax":
        return softmax(value, axis=1)
    return value.astype(np.float64)


@dataclass(frozen=True)
class IndexTarget(OutputTarget):
    """One element of one output, after an activation."""

    at: tuple[int, ...]
    act: str

    def __call__(self, outputs: Outputs) -> np.ndarray:
        value = outputs[self.output]
        where: tuple[Any, ...] = (slice(None), *self.at)
        if self.act == "softmax":
            return _activate(value, self.act)[where]
        return _activate(value[where], self.act)


@dataclass(frozen=True)
class IndexSpec(TargetSpec):
    """``index:at=i,j,...[:output=NAME][:act=none|sigmoid|softmax]``."""

    at: tuple[int, ...] | None = None
    output: str | None = None
    act: str = "none"

    kind: ClassVar[str] = "index"
    keys: ClassVar[dict[str, Key]] = {
        "at": Key(_indices, "indices after the batch axis, e.g. at=0,3,5", _show_indices),
        "output": Key(str, "an output name of the model"),
        "act": Key(_act, "one of " + ", ".join(ACTS)),
    }

    def bind(self, ctx: BindContext, clean: Outputs) -> list[Target]:
        if self.output is None and len(clean) > 1:
            raise ConfigError(
                f"target '{self.spec}': the model has several outputs ({describe_outputs(clean)}); "
                "name one with output=NAME"
            )
        name = self.output or next(iter(clean))
        if name not in clean:
            raise ConfigError(
                f"target '{self.spec}': the model has no output '{name}'; its outputs: "
                f"{describe_outputs(clean)}"
            )
        shape = tuple(clean[name].shape[1:])
        if (
            self.at is None
            or len(self.at) != len(shape)
            or any(i >= d for i, d in zip(self.at, shape, strict=True))
        ):
            valid = ",".join(f"0..{d - 1}" for d in shape)
            given = "nothing" if self.at is None else ",".join(map(str, self.at))
            raise ConfigError(
                f"target '{self.spec}': at={given} does not index output '{name}' of shape "
                f"{tuple(clean[name].shape)}; give {len(shape)} indices, at={valid}"
            )
        record = {
            "kind": self.kind,
            "spec": self.spec,
            "output": name,
            "class_index": None,
            "label": None,
            "score": 0.0,
            "summary": "",
        }
        target = IndexTarget(name, record, self.at, self.act)
        score = float(target(clean)[0])
        shown = ", ".join(map(str, self.at))
        record.update(score=score, summary=f"index {name}[{shown}] = {score:.4g}")
        return [target]
