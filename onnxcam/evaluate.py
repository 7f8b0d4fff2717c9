"""Faithfulness evaluation of saliency methods against simple reference explanations.

Each method's map is made at the model's input resolution and scored with the metrics of
:mod:`onnxcam.metrics`, every pass going through the explainer's runner. Methods are those of
:mod:`onnxcam.methods` (each with the settings given for it, else its defaults; ``activation``
is the mean of the node's channels); the references ``center`` (a centred Gaussian) and
``random`` (uniform noise, seeded) need no model.

Per image and method: Average Drop and Increase in Confidence, the deletion and insertion
curves, ROAD's MoRF and LeRF curves, ADCC's coherency and complexity and, when ground-truth
boxes are given, the pointing game and the energy-based pointing game.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import methods as registry
from . import metrics
from .config import Bounds
from .errors import ConfigError
from .explain import Explainer, Forward, ImageLike
from .methods import Method
from .runner import one_input
from .targets import Target, TargetLike, checked_scores, resolve_targets

__all__ = [
    "COMPARED",
    "REFERENCES",
    "SUBSTRATES",
    "Evaluation",
    "default_methods",
    "evaluate",
    "format_table",
    "summarize",
    "truth_boxes",
]

REFERENCES = ("center", "random")
#: What ``evaluate`` compares: every saliency method, and the reference maps.
COMPARED = (*registry.METHODS, *REFERENCES)
SUBSTRATES = ("zero", "blur")

Box = Sequence[float]


@dataclass(frozen=True)
class Evaluation:
    """The metrics of one method's map on one image.

    Attributes:
        score: Y, the target's probability (or score) on the image.
        explained_score: O, its score on the image multiplied by the map.
        deletion, insertion: the causal curves (steps + 1 scores).
        road_morf, road_lerf: ROAD's scores with 10 %, ..., 90 % of the pixels removed, most
            or least relevant first (empty when ROAD was not run).
        coherency: ADCC's coherency (None when not run).
        complexity: ADCC's complexity, the mean of the map.
        pointing: whether the map's maximum lies in a ground-truth box (None: no boxes).
        energy: the share of the map's sum inside the ground-truth boxes (None: no boxes).
        saliency: the map at the model's input resolution.
        seconds: how long making the map took.
        image: the image (RGB), when there is one, for pictures of the map.
        x: the model input the map explains.
        inside: the pixels inside the ground-truth boxes (None: no boxes).
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
    road_morf: np.ndarray = field(default_factory=lambda: np.zeros(0))
    road_lerf: np.ndarray = field(default_factory=lambda: np.zeros(0))
    coherency: float | None = None
    complexity: float = 0.0
    pointing: bool | None = None
    energy: float | None = None
    x: np.ndarray | None = None
    inside: np.ndarray | None = None

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
        record = {
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
            "complexity": self.complexity,
            "map_seconds": self.seconds,
        }
        if len(self.road_morf):
            record["road_morf_curve"] = self.road_morf.tolist()
            record["road_lerf_curve"] = self.road_lerf.tolist()
        if self.coherency is not None:
            record["coherency"] = self.coherency
        if self.pointing is not None:
            record["pointing_hit"] = self.pointing
            record["energy_in_box"] = self.energy
        return record


def default_methods(explainer: Explainer) -> tuple[str, ...]:
    """What ``evaluate`` compares unless told: the explainer's method and the references."""
    return tuple(dict.fromkeys((explainer.method.name, "activation", *REFERENCES)))


def _reference_map(method: str, size: tuple[int, int], seed: int) -> np.ndarray:
    if method == "center":
        return metrics.center_prior(*size)
    return np.random.default_rng(seed).uniform(size=size).astype(np.float32)


def _method(explainer: Explainer, name: str, settings: Mapping[str, Any]) -> Method:
    if name in settings:
        baseline = explainer.config.baseline if registry.METHODS[name].takes_baseline else "none"
        return registry.create(name, options=settings[name], baseline=baseline)
    if name == explainer.method.name:
        return explainer.method
    return registry.create(name)


def truth_boxes(boxes: Sequence[Any], fwd: Forward, target: Target) -> list[list[float]]:
    """The ground-truth boxes the target's map should point into, in input pixels.

    ``boxes`` are in image pixels, each ``[x0, y0, x1, y1]`` or ``{"box": [...], "class":
    c}``. A detection target (one with a ``box``) takes the box that overlaps its own most;
    another target takes the boxes of its class when classes are given, else every box.
    """
    plain = [b["box"] if isinstance(b, Mapping) else b for b in boxes]
    classes = [b.get("class") if isinstance(b, Mapping) else None for b in boxes]
    if not plain:
        return []
    found = np.asarray(plain, np.float64).reshape(-1, 4)
    if fwd.geometry is not None:
        found = fwd.geometry.to_input(found)
    info = target.describe()
    if info.get("box") is not None and fwd.geometry is not None:
        own = fwd.geometry.to_input(np.asarray(info["box"], np.float64)[None])[0]
        return [found[int(np.argmax(_overlaps(found, own)))].tolist()]
    index = info.get("class_index")
    same = [i for i, c in enumerate(classes) if c is not None and c == index]
    chosen = same if any(c is not None for c in classes) else range(len(found))
    return [found[i].tolist() for i in chosen]


def _overlaps(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    w = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    h = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = w * h
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    own = (box[2] - box[0]) * (box[3] - box[1])
    return inter / np.maximum(area + own - inter, 1e-12)


def evaluate(
    explainer: Explainer,
    image: ImageLike,
    *,
    methods: Sequence[str] | None = None,
    settings: Mapping[str, Any] | None = None,
    steps: int = 32,
    substrate: str = "zero",
    seed: int = 0,
    target: TargetLike | Iterable[TargetLike] | None = None,
    road: bool = True,
    adcc: bool = True,
    boxes: Sequence[Any] | None = None,
) -> list[Evaluation]:
    """All metrics for each method on one image, for its first ``target`` (default: the
    model's default target); the metrics read the target's probability whatever the method
    scores.

    Args:
        methods: names from :data:`COMPARED` (default: :func:`default_methods`).
        settings: method name -> its options (others: the explainer's for its own method,
            the method's defaults otherwise).
        road: run ROAD (18 more passes and an imputation per level).
        adcc: compute ADCC's coherency (the method's map of the explanation input: its
            passes once more).
        boxes: the image's ground-truth boxes, for the pointing games (see
            :func:`truth_boxes`).
    """
    if substrate not in SUBSTRATES:
        raise ConfigError(f"unknown substrate '{substrate}'; valid: {', '.join(SUBSTRATES)}")
    # Each step takes at least one pixel of the input: more steps than pixels mean nothing
    # (and 10**18 of them would be an array of that many scores).
    pixels = explainer.spec.height * explainer.spec.width
    problem = Bounds(1, pixels, integer=True).problem(steps)
    if problem:
        raise ConfigError(f"steps {problem}: each takes one or more of the input's pixels")
    chosen = default_methods(explainer) if methods is None else tuple(methods)
    unknown = [m for m in chosen if m not in COMPARED]
    if unknown:
        raise ConfigError(f"unknown method '{unknown[0]}'; valid: {', '.join(COMPARED)}")
    settings = settings or {}
    fwd = explainer.forward(image)
    specs = resolve_targets(target)
    first = specs[0] if specs else None
    judged = explainer.bind(fwd, first, score_kind="probability")[0]

    def score(count: int, inputs: metrics.Inputs) -> np.ndarray:
        return explainer.score([judged], count, inputs)[:, 0]

    spec = fwd.spec
    size = (spec.height, spec.width)
    x = fwd.x
    blurred = metrics.blur_input(x, spec.layout)
    finish = np.zeros_like(x) if substrate == "zero" else blurred
    clean = float(checked_scores(judged, fwd.outputs, 1)[0])
    class_index = judged.describe().get("class_index")
    inside = None
    if boxes is not None:
        inside = metrics.box_mask(truth_boxes(boxes, fwd, judged), size)
    results = []
    for name in chosen:
        t0 = time.perf_counter()
        method = None if name in REFERENCES else _method(explainer, name, settings)
        if method is None:
            saliency = _reference_map(name, size, seed)
        else:
            explained_target = explainer.bind(fwd, first, method=method)[:1]
            saliency = explainer.method_maps(fwd, explained_target, method=method)[0].map
        seconds = time.perf_counter() - t0
        masked = metrics.masked_by_map(x, saliency, spec.layout)
        explained = float(score(1, one_input(masked))[0])
        deletion = metrics.causal_curve(score, x, finish, saliency, steps=steps, layout=spec.layout)
        insertion = metrics.causal_curve(
            score, blurred, x, saliency, steps=steps, layout=spec.layout
        )
        morf = lerf = np.zeros(0)
        if road:
            morf, lerf = (
                metrics.road_curve(score, x, saliency, most_first=m, layout=spec.layout, seed=seed)
                for m in (True, False)
            )
        coherency = None
        if adcc:
            again = saliency  # a reference map does not look at the image
            if method is not None:
                other = explainer.forward(tensor=masked)
                again = explainer.method_maps(other, explained_target, method=method)[0].map
            coherency = metrics.coherency(saliency, again)
        pointing = energy = None
        if inside is not None:
            pointing = metrics.pointing_hit(saliency, inside)
            energy = metrics.energy_in_boxes(saliency, inside)
        results.append(
            Evaluation(
                fwd.source, name, class_index, clean, explained, deletion, insertion,
                saliency=saliency, seconds=seconds, image=fwd.rgb, road_morf=morf,
                road_lerf=lerf, coherency=coherency, complexity=metrics.complexity(saliency),
                pointing=pointing, energy=energy, x=x, inside=inside,
            )
        )  # fmt: skip
    return results


def summarize(evaluations: Iterable[Evaluation]) -> dict[str, dict[str, float]]:
    """Per method: Average Drop (%), Increase in Confidence (%), mean deletion/insertion AUC,
    ROAD's mean MoRF and LeRF scores, ADCC, pointing game (%), energy in boxes (%) where
    measured, and seconds per map."""
    by_method: dict[str, list[Evaluation]] = {}
    for ev in evaluations:
        by_method.setdefault(ev.method, []).append(ev)
    table = {}
    for method, evs in by_method.items():
        clean = np.array([e.score for e in evs])
        explained = np.array([e.explained_score for e in evs])
        drop = metrics.average_drop(clean, explained)
        row = {
            "images": float(len(evs)),
            "average_drop": drop,
            "increase_in_confidence": metrics.increase_in_confidence(clean, explained),
            "deletion_auc": float(np.mean([e.deletion_auc for e in evs])),
            "insertion_auc": float(np.mean([e.insertion_auc for e in evs])),
        }
        if all(len(e.road_morf) for e in evs):
            row["road_morf"] = float(np.mean([e.road_morf.mean() for e in evs]))
            row["road_lerf"] = float(np.mean([e.road_lerf.mean() for e in evs]))
        coherencies = [e.coherency for e in evs if e.coherency is not None]
        if len(coherencies) == len(evs):
            coherency = float(np.mean(coherencies))
            complexity = float(np.mean([e.complexity for e in evs]))
            row["adcc"] = 100.0 * metrics.adcc(coherency, complexity, drop / 100.0)
        if all(e.pointing is not None for e in evs):
            row["pointing_game"] = 100.0 * float(np.mean([bool(e.pointing) for e in evs]))
            row["energy_pointing_game"] = 100.0 * float(np.mean([e.energy for e in evs]))
        row["seconds_per_image"] = float(np.mean([e.seconds for e in evs]))
        table[method] = row
    return table


#: The summary's columns as ``format_table`` prints them: key, header, width, decimals.
COLUMNS = (
    ("images", "images", 7, 0),
    ("average_drop", "avg drop %", 11, 2),
    ("increase_in_confidence", "increase %", 11, 2),
    ("deletion_auc", "deletion", 9, 4),
    ("insertion_auc", "insertion", 10, 4),
    ("road_morf", "ROAD MoRF", 10, 4),
    ("road_lerf", "ROAD LeRF", 10, 4),
    ("adcc", "ADCC %", 8, 2),
    ("pointing_game", "pointing %", 11, 1),
    ("energy_pointing_game", "energy %", 9, 1),
    ("seconds_per_image", "s/image", 9, 3),
)


def format_table(table: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The summary as lines of text, one row per method; columns that no row has are left
    out."""
    shown = [c for c in COLUMNS if any(c[0] in row for row in table.values())]
    lines = [f"{'method':<12}" + "".join(f"{head:>{width}}" for _, head, width, _ in shown)]
    for method, row in table.items():
        cells = [
            f"{row[key]:>{width}.{decimals}f}" if key in row else f"{'–':>{width}}"
            for key, _, width, decimals in shown
        ]
        lines.append(f"{method:<12}" + "".join(cells))
    return lines
