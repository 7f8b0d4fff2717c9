"""Class targets: ``class:N`` (default: the top class) and ``top:K`` (the K best classes).

On a ``(B, N)`` output (or ``(B, N, 1, 1)``), the score of class ``c`` is, by ``prob``:

- ``softmax``: ``exp(z_c) / Σ_j exp(z_j)``;
- ``sigmoid``: ``1 / (1 + exp(-z_c))`` (multi-label heads);
- ``logit``: ``z_c``, the raw output;
- ``auto`` (default): the raw value when the output already holds probabilities (the graph
  ends in Softmax or Sigmoid, or the clean rows are distributions); otherwise what the
  method scores: softmax (sigmoid for a single column) for ``probability``, ``z_c`` for
  ``logit``.

The reported ``score`` is always the class probability (the model's confidence), whatever
the masked passes measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from . import keys as read
from .base import (
    BindContext,
    Key,
    Outputs,
    OutputTarget,
    Target,
    TargetSpec,
    as_vectors,
    is_distribution,
    pick_output,
    sigmoid,
    softmax,
)

__all__ = ["PROBS", "ClassSpec", "ClassTarget", "TopSpec"]

PROBS = ("auto", "softmax", "sigmoid", "logit")


_OUTPUT = Key(str, "an output name of the model")
_PROB = Key(read.choice(PROBS), "one of " + ", ".join(PROBS))


def _transform(values: np.ndarray, mode: str) -> np.ndarray:
    """Per-class scores (B, N) under ``mode``: ``softmax``, ``sigmoid`` or ``raw``."""
    if mode == "softmax":
        return softmax(values)
    if mode == "sigmoid":
        return sigmoid(values)
    return values.astype(np.float64)


def _modes(ctx: BindContext, name: str, clean: np.ndarray, prob: str) -> tuple[str, str, str]:
    """For one output: how the masked passes are scored (softmax, sigmoid or raw), how the
    confidence is read, and what the scores are, in words, for the record."""
    already = ctx.info(name).activation is not None or is_distribution(clean)
    confidence = "raw" if already else ("sigmoid" if clean.shape[1] == 1 else "softmax")
    if prob == "auto":
        mode = confidence if ctx.score_kind == "probability" else "raw"
        mode = "raw" if already else mode
    else:
        mode = "raw" if prob == "logit" else prob
    scored = mode if mode != "raw" else ("probability" if already else "logit")
    return mode, confidence, scored


@dataclass(frozen=True)
class ClassTarget(OutputTarget):
    """The score of one class of one output. ``mode``: softmax, sigmoid or raw."""

    class_index: int
    mode: str

    def __call__(self, outputs: Outputs) -> np.ndarray:
        value = outputs[self.output]
        rows = as_vectors(value)
        if rows is None:
            raise ConfigError(f"output '{self.output}' has shape {value.shape}, not (batch, N)")
        return _transform(rows, self.mode)[:, self.class_index]


@dataclass(frozen=True)
class _Scoring:
    """How one output is read: its clean confidences (N,), the scoring mode (softmax,
    sigmoid or raw) and what that is in words for the record."""

    output: str
    probs: np.ndarray
    mode: str
    scored: str


def _scoring(
    ctx: BindContext, clean: Outputs, spec: TargetSpec, output: str | None, prob: str
) -> _Scoring:
    name = pick_output(ctx, clean, output, kind=spec.kind)
    rows = as_vectors(clean[name])
    if rows is None:
        raise ConfigError(
            f"target '{spec.spec}': output '{name}' has shape {tuple(clean[name].shape)}; "
            "a class target needs (batch, classes); use index:output=NAME:at=... instead"
        )
    mode, confidence, scored = _modes(ctx, name, rows, prob)
    return _Scoring(name, _transform(rows, confidence)[0], mode, scored)


def _target(
    ctx: BindContext, spec: TargetSpec, scoring: _Scoring, c: int, **extra: Any
) -> ClassTarget:
    probs, label = scoring.probs, ctx.label(c)
    top = np.argsort(-probs, kind="stable")[:5]
    record = {
        "kind": spec.kind,
        "spec": spec.spec,
        "output": scoring.output,
        "class_index": c,
        "label": label,
        "score": float(probs[c]),
        "scored": scoring.scored,
        **extra,
        "top5": [
            {"index": int(i), "label": ctx.label(int(i)), "score": float(probs[i])} for i in top
        ],
        "summary": f"class {c}" + (f" {label}" if label else "") + f" (p={probs[c]:.3f})",
    }
    return ClassTarget(scoring.output, record, c, scoring.mode)


@dataclass(frozen=True)
class ClassSpec(TargetSpec):
    """``class[:N][:prob=auto|softmax|sigmoid|logit][:output=NAME]``; N defaults to the top
    class of the clean image."""

    index: int | None = None
    prob: str = "auto"
    output: str | None = None

    kind: ClassVar[str] = "class"
    value: ClassVar[str | None] = "index"
    keys: ClassVar[dict[str, Key]] = {
        "index": Key(read.count, "a class index (0, 1, ...)"),
        "prob": _PROB,
        "output": _OUTPUT,
    }

    def bind(self, ctx: BindContext, clean: Outputs) -> list[Target]:
        scoring = _scoring(ctx, clean, self, self.output, self.prob)
        n = scoring.probs.shape[0]
        c = int(np.argmax(scoring.probs)) if self.index is None else self.index
        if not 0 <= c < n:
            raise ConfigError(
                f"target class {c} is out of range; output '{scoring.output}' has {n} "
                f"classes (0..{n - 1})"
            )
        return [_target(ctx, self, scoring, c)]


@dataclass(frozen=True)
class TopSpec(TargetSpec):
    """``top:K[:prob=...][:output=NAME]``: one target for each of the K best classes."""

    k: int = 1
    prob: str = "auto"
    output: str | None = None

    kind: ClassVar[str] = "top"
    value: ClassVar[str | None] = "k"
    keys: ClassVar[dict[str, Key]] = {
        "k": Key(read.positive, "a number of classes, at least 1"),
        "prob": _PROB,
        "output": _OUTPUT,
    }

    def bind(self, ctx: BindContext, clean: Outputs) -> list[Target]:
        scoring = _scoring(ctx, clean, self, self.output, self.prob)
        if self.k > scoring.probs.shape[0]:
            raise ConfigError(
                f"target '{self.spec}' asks for more classes than output '{scoring.output}' "
                f"has ({scoring.probs.shape[0]})"
            )
        order = np.argsort(-scoring.probs, kind="stable")[: self.k]
        return [_target(ctx, self, scoring, int(c), rank=r + 1) for r, c in enumerate(order)]
