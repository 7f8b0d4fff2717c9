"""Targets: what "the score" of a (masked) input is.

A target turns a batch of model outputs into one number per input,
``score(outputs) -> (B,)``, bound once to the clean image's outputs. The Score-CAM core
never sees a class index; it only calls a target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, ModelError

__all__ = ["ClassifierTarget", "class_scores", "is_distribution", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (B, N) in float64, stable for large logits."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def is_distribution(rows: np.ndarray, *, tol: float = 1e-3) -> bool:
    """True when every row is non-negative and sums to 1 (the model ends in a softmax)."""
    return bool(np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1.0, atol=tol))


def class_scores(output: np.ndarray, name: str = "output") -> np.ndarray:
    """A classifier output as (B, N): trailing singleton dims are dropped.

    Raises:
        ModelError: the output is not one vector of class scores per input.
    """
    scores = output.reshape(output.shape[0], -1) if output.ndim > 2 else output
    squeezable = output.ndim <= 2 or all(d == 1 for d in output.shape[2:])
    if output.ndim < 2 or not squeezable:
        raise ModelError(
            f"model output '{name}' has shape {tuple(output.shape)}; a classifier output "
            "(batch, classes) is needed (detector and segmenter targets are not supported yet)"
        )
    return scores


@dataclass(frozen=True)
class ClassifierTarget:
    """Score of one class of a classifier output.

    Attributes:
        output: name of the model output holding the class scores.
        class_index: the class to explain.
        kind: ``"probability"`` (post-softmax; softmax is not applied again when the model
            already outputs probabilities) or ``"logit"`` (the raw output value).
        outputs_probabilities: the model's output is already a distribution.
    """

    output: str
    class_index: int
    kind: str = "probability"
    outputs_probabilities: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("probability", "logit"):
            raise ConfigError(f"unknown score '{self.kind}'; valid: probability, logit")

    def __call__(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        scores = class_scores(outputs[self.output], self.output)
        if self.class_index >= scores.shape[1]:
            raise ConfigError(
                f"target class {self.class_index} is out of range; the model has "
                f"{scores.shape[1]} classes (0..{scores.shape[1] - 1})"
            )
        if self.kind == "probability" and not self.outputs_probabilities:
            scores = softmax(scores)
        return scores[:, self.class_index].astype(np.float64)
