"""Faithfulness evaluation of Score-CAM against simple reference explanations.

Each method's map is made at the model's input resolution and scored with the metrics of
:mod:`onnxcam.metrics`, all batches going through the explainer's session. References:
``activation`` (the mean of the node's channels, upsampled and min-max normalised),
``center`` (a centred Gaussian) and ``random`` (uniform noise, seeded).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import metrics, scorecam
from .errors import ConfigError
from .explain import Explainer, Forward

__all__ = ["METHODS", "SUBSTRATES", "Evaluation", "evaluate", "summarize"]

METHODS = ("scorecam", "activation", "center", "random")
SUBSTRATES = ("zero", "blur")


@dataclass(frozen=True)
class Evaluation:
    """The metrics of one method's map on one image.

    Attributes:
        score: Y, the class probability of the image.
        explained_score: O, the class probability of the image multiplied by the map.
        deletion, insertion: the causal curves (steps + 1 probabilities).
    """

    source: str | None
    method: str
    class_index: int
    score: float
    explained_score: float
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def drop(self) -> float:
        return metrics.average_drop(np.array([self.score]), np.array([self.explained_score]))

    @property
    def deletion_auc(self) -> float:
        return metrics.auc(self.deletion)

    @property
    def insertion_auc(self) -> float:
        return metrics.auc(self.insertion)

    def to_record(self) -> dict:
        return {
            "source": self.source,
            "method": self.method,
            "class_index": self.class_index,
            "score": self.score,
            "explained_score": self.explained_score,
            "drop_percent": self.drop,
            "increase": self.explained_score > self.score,
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "deletion_curve": self.deletion.tolist(),
            "insertion_curve": self.insertion.tolist(),
        }


def _reference_map(method: str, fwd: Forward, size: tuple[int, int], seed: int) -> np.ndarray:
    if method == "activation":
        mean = fwd.acts.mean(axis=0, dtype=np.float64)
        return scorecam.minmax(scorecam.upsample(mean, size)[None])[0]
    if method == "center":
        return metrics.center_prior(*size)
    if method == "random":
        return np.random.default_rng(seed).uniform(size=size).astype(np.float32)
    raise ConfigError(f"unknown method '{method}'; valid: {', '.join(METHODS)}")


def evaluate(
    explainer: Explainer,
    image: str | Path | np.ndarray,
    *,
    methods: Sequence[str] = METHODS,
    steps: int = 32,
    substrate: str = "zero",
    seed: int = 0,
    target: int | None = None,
) -> list[Evaluation]:
    """All metrics for each method on one image (class: ``target``, else the top class)."""
    if substrate not in SUBSTRATES:
        raise ConfigError(f"unknown substrate '{substrate}'; valid: {', '.join(SUBSTRATES)}")
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method '{unknown[0]}'; valid: {', '.join(METHODS)}")
    fwd = explainer.forward(image, target=target)
    target_fn = explainer.target(fwd)
    outputs = [explainer.class_output]
    chunk = explainer.batch_size()
    pad = chunk if explainer.max_batch is None else explainer.max_batch

    def score(batches: Iterable[np.ndarray]) -> np.ndarray:
        runs = explainer.session.run_chunks(batches, outputs, pad_to=pad)
        return np.concatenate([target_fn(out) for out in runs])

    spec = explainer.spec
    size = (spec.height, spec.width)
    x = fwd.x
    blurred = metrics.blur_input(x, spec.layout)
    finish = np.zeros_like(x) if substrate == "zero" else blurred
    clean = float(target_fn(fwd.outputs)[0])
    results = []
    for method in methods:
        if method == "scorecam":
            saliency = explainer.explain_forward(fwd).saliency_input
        else:
            saliency = _reference_map(method, fwd, size, seed)
        explained = float(score(iter([metrics.masked_by_map(x, saliency, spec.layout)]))[0])
        deletion = metrics.causal_curve(
            score, x, finish, saliency, steps=steps, chunk=chunk, layout=spec.layout
        )
        insertion = metrics.causal_curve(
            score, blurred, x, saliency, steps=steps, chunk=chunk, layout=spec.layout
        )
        results.append(
            Evaluation(fwd.source, method, fwd.class_index, clean, explained, deletion, insertion)
        )
    return results


def summarize(evaluations: Iterable[Evaluation]) -> dict[str, dict[str, float]]:
    """Per method: Average Drop (%), Increase in Confidence (%), mean deletion/insertion AUC."""
    by_method: dict[str, list[Evaluation]] = {}
    for ev in evaluations:
        by_method.setdefault(ev.method, []).append(ev)
    table = {}
    for method, evs in by_method.items():
        clean = np.array([e.score for e in evs])
        explained = np.array([e.explained_score for e in evs])
        table[method] = {
            "images": float(len(evs)),
            "average_drop": metrics.average_drop(clean, explained),
            "increase_in_confidence": metrics.increase_in_confidence(clean, explained),
            "deletion_auc": float(np.mean([e.deletion_auc for e in evs])),
            "insertion_auc": float(np.mean([e.insertion_auc for e in evs])),
        }
    return table
