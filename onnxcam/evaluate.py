"""Faithfulness evaluation of saliency methods against simple reference explanations.

Each method's map is made at the model's input resolution and scored with the metrics of
:mod:`onnxcam.metrics`, every pass going through the explainer's runner. Methods are those of
:mod:`onnxcam.methods` (the explainer's own one with its options, the others with their
defaults; ``activation`` is the mean of the node's channels); the references ``center`` (a
centred Gaussian) and ``random`` (uniform noise, seeded) need no model.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from . import methods as registry
from . import metrics
from .errors import ConfigError
from .explain import Explainer, Forward, ImageLike
from .methods import Method, ScoreCamOptions
from .runner import one_input
from .targets import Target, TargetLike, checked_scores

__all__ = ["METHODS", "REFERENCES", "SUBSTRATES", "Evaluation", "evaluate", "summarize"]

REFERENCES = ("center", "random")
METHODS = (*registry.METHODS, *REFERENCES)
SUBSTRATES = ("zero", "blur")


@dataclass(frozen=True)
class Evaluation:
    """The metrics of one method's map on one image.

    Attributes:
        score: Y, the class probability of the image.
        explained_score: O, the class probability of the image multiplied by the map.
        deletion, insertion: the causal curves (steps + 1 probabilities).
        saliency: the map at the model's input resolution.
        seconds: how long making the map took.
        image: the image (RGB), when there is one, for pictures of the map.
    """

    source: str | None
    method: str
    class_index: int | None
    score: float
    explained_score: float
    deletion: np.ndarray
    insertion: np.ndarray
    saliency: np.ndarray | None = None
    seconds: float = 0.0
    image: np.ndarray | None = None

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
            "map_seconds": self.seconds,
        }


def _reference_map(method: str, size: tuple[int, int], seed: int) -> np.ndarray:
    if method == "center":
        return metrics.center_prior(*size)
    return np.random.default_rng(seed).uniform(size=size).astype(np.float32)


def _method_map(explainer: Explainer, method: Method, fwd: Forward, target: Target) -> np.ndarray:
    """``method``'s map of ``target`` at input resolution, its passes through the runner."""
    clean = explainer.clean(fwd)
    plan = method.plan(clean)
    scores = explainer.score([target], plan.count, plan.inputs)[:, 0]
    clean_score = float(checked_scores(target, fwd.outputs, 1)[0])
    return method.combine(clean, plan, scores, clean_score).map


def evaluate(
    explainer: Explainer,
    image: ImageLike,
    *,
    methods: Sequence[str] = METHODS,
    steps: int = 32,
    substrate: str = "zero",
    seed: int = 0,
    target: TargetLike | Iterable[TargetLike] | None = None,
) -> list[Evaluation]:
    """All metrics for each method on one image, for its first ``target`` (default: the top
    class); the metrics read the target's probability whatever the method scores."""
    if substrate not in SUBSTRATES:
        raise ConfigError(f"unknown substrate '{substrate}'; valid: {', '.join(SUBSTRATES)}")
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method '{unknown[0]}'; valid: {', '.join(METHODS)}")
    fwd = explainer.forward(image)
    judged = explainer.bind(fwd, target, score_kind="probability")[0]
    explained_target = explainer.bind(fwd, target)[0]

    def score(count: int, inputs: metrics.Inputs) -> np.ndarray:
        return explainer.score([judged], count, inputs)[:, 0]

    spec = fwd.spec
    size = (spec.height, spec.width)
    x = fwd.x
    blurred = metrics.blur_input(x, spec.layout)
    finish = np.zeros_like(x) if substrate == "zero" else blurred
    clean = float(checked_scores(judged, fwd.outputs, 1)[0])
    class_index = judged.describe().get("class_index")
    results = []
    for name in methods:
        t0 = time.perf_counter()
        if name in REFERENCES:
            saliency = _reference_map(name, size, seed)
        else:
            method = (
                explainer.method
                if name == explainer.method.name
                else registry.create(name, options=ScoreCamOptions(), baseline="none")
            )
            saliency = _method_map(explainer, method, fwd, explained_target)
        seconds = time.perf_counter() - t0
        masked = metrics.masked_by_map(x, saliency, spec.layout)
        explained = float(score(1, one_input(masked))[0])
        deletion = metrics.causal_curve(score, x, finish, saliency, steps=steps, layout=spec.layout)
        insertion = metrics.causal_curve(
            score, blurred, x, saliency, steps=steps, layout=spec.layout
        )
        results.append(
            Evaluation(
                fwd.source,
                name,
                class_index,
                clean,
                explained,
                deletion,
                insertion,
                saliency,
                seconds,
                fwd.rgb,
            )
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
            "seconds_per_image": float(np.mean([e.seconds for e in evs])),
        }
    return table
