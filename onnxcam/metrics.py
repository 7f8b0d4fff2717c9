"""Faithfulness metrics of a saliency map, in numpy, over any batched score function.

- Average Drop and Increase in Confidence (Chattopadhyay et al., Grad-CAM++, WACV 2018, as
  used by the Score-CAM paper): with ``Y`` the class score of the image and ``O`` the score of
  the image multiplied by the map ``L`` (in [0, 1], at input resolution),
  ``AvgDrop = 100 · mean(max(0, Y − O) / Y)`` and ``IncConf = 100 · mean(O > Y)``.
- Deletion and Insertion (Petsiuk et al., RISE, BMVC 2018): pixels are moved, most salient
  first, in ``steps`` equal steps from a start image to a finish image, and the class score is
  recorded after each step. Deletion goes from the image to a substrate (zeros in input space,
  or a blur); insertion from a blurred image to the image. The metric is the area under the
  curve on [0, 1] by the trapezoid rule: ``(Σ c − c₀/2 − c_n/2) / n``. Low deletion and high
  insertion are good.

Curves are scored by ``score(count, inputs) -> (count,)``, where ``inputs(chunk)`` yields the
``count`` inputs at most ``chunk`` at a time; the caller decides how they are run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from . import ops

__all__ = [
    "ScoreFn",
    "auc",
    "average_drop",
    "blur_input",
    "causal_curve",
    "center_prior",
    "increase_in_confidence",
    "masked_by_map",
]

Inputs = Callable[[int], Iterator[np.ndarray]]
ScoreFn = Callable[[int, Inputs], np.ndarray]


def auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at ``n + 1`` equally spaced points on [0, 1]."""
    curve = np.asarray(curve, np.float64)
    n = curve.shape[0] - 1
    if n < 1:
        raise ValueError("a curve needs at least two points")
    return float((curve.sum() - curve[0] / 2 - curve[-1] / 2) / n)


def average_drop(clean: np.ndarray, explained: np.ndarray) -> float:
    """``100 · mean(max(0, Y − O) / Y)`` over images (Y > 0)."""
    clean = np.asarray(clean, np.float64)
    explained = np.asarray(explained, np.float64)
    return float(100.0 * np.mean(np.maximum(clean - explained, 0.0) / clean))


def increase_in_confidence(clean: np.ndarray, explained: np.ndarray) -> float:
    """``100 · mean(O > Y)``: the share of images whose score rises under their map."""
    return float(100.0 * np.mean(np.asarray(explained) > np.asarray(clean)))


def masked_by_map(x: np.ndarray, saliency: np.ndarray, layout: str) -> np.ndarray:
    """The "explanation map" input ``x ⊙ L`` of Average Drop."""
    return ops.apply_masks(x, saliency[None].astype(np.float32), layout)


def causal_curve(
    score: ScoreFn,
    start: np.ndarray,
    finish: np.ndarray,
    saliency: np.ndarray,
    *,
    steps: int,
    layout: str,
) -> np.ndarray:
    """Scores while pixels move from ``start`` to ``finish``, most salient first.

    Step ``i`` of ``0..steps`` has the ``ceil(i · HW / steps)`` most salient pixels taken from
    ``finish`` (all colour channels) and the rest from ``start``. Inputs are built as many
    steps at a time as the scorer asks. Ties in the map are broken by pixel position, so the
    order is fixed.

    Returns:
        (steps + 1,) scores.
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    height, width = saliency.shape
    order = np.argsort(-saliency.reshape(-1), kind="stable")
    flat_rank = np.empty(order.size, np.int64)
    flat_rank[order] = np.arange(order.size)
    rank = flat_rank.reshape(height, width)
    counts = np.ceil(np.arange(steps + 1) * (height * width) / steps).astype(np.int64)

    def inputs(chunk: int) -> Iterator[np.ndarray]:
        for begin in range(0, steps + 1, chunk):
            taken = rank[None] < counts[begin : begin + chunk, None, None]
            yield ops.blend(start, finish, taken, layout)

    return np.asarray(score(steps + 1, inputs), np.float64)


def blur_input(x: np.ndarray, layout: str) -> np.ndarray:
    """The insertion start: the input under RISE's Gaussian blur (11 px kernel, sigma 5)."""
    return ops.blur(x, layout, sigma=5.0, ksize=11)


def center_prior(height: int, width: int, *, sigma: float = 0.25) -> np.ndarray:
    """A centred Gaussian, ``sigma`` a fraction of each side, peak 1: a no-information map."""
    ys = (np.arange(height) + 0.5) / height - 0.5
    xs = (np.arange(width) + 0.5) / width - 0.5
    g = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))
    return (g / g.max()).astype(np.float32)
