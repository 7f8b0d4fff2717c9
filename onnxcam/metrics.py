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

Every function takes ``score(batch) -> (B,)``; the caller decides how batches are run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import cv2
import numpy as np

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

ScoreFn = Callable[[Iterable[np.ndarray]], np.ndarray]


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


def _expand(maps: np.ndarray, layout: str) -> np.ndarray:
    """(n, H, W) maps broadcastable against (n, C, H, W) or (n, H, W, C) inputs."""
    return maps[:, None] if layout == "NCHW" else maps[..., None]


def masked_by_map(x: np.ndarray, saliency: np.ndarray, layout: str) -> np.ndarray:
    """The "explanation map" input ``x ⊙ L`` of Average Drop."""
    out = x.astype(np.float32) * _expand(saliency[None].astype(np.float32), layout)
    return out.astype(x.dtype)


def causal_curve(
    score: ScoreFn,
    start: np.ndarray,
    finish: np.ndarray,
    saliency: np.ndarray,
    *,
    steps: int,
    chunk: int,
    layout: str,
) -> np.ndarray:
    """Scores while pixels move from ``start`` to ``finish``, most salient first.

    Step ``i`` of ``0..steps`` has the ``ceil(i · HW / steps)`` most salient pixels taken from
    ``finish`` (all colour channels) and the rest from ``start``. Inputs are built ``chunk``
    steps at a time. Ties in the map are broken by pixel position, so the order is fixed.

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

    def batches() -> Iterator[np.ndarray]:
        for begin in range(0, steps + 1, chunk):
            taken = rank[None] < counts[begin : begin + chunk, None, None]
            yield np.where(_expand(taken, layout), finish, start).astype(start.dtype)

    return np.asarray(score(batches()), np.float64)


def blur_input(x: np.ndarray, layout: str, *, ksize: int = 11, sigma: float = 5.0) -> np.ndarray:
    """Gaussian blur of a (1, C, H, W) / (1, H, W, C) input, per channel (RISE: 11, 5)."""
    planes = x[0].astype(np.float32)
    if layout == "NCHW":
        planes = planes.transpose(1, 2, 0)
    blurred = cv2.GaussianBlur(planes, (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT_101)
    if blurred.ndim == 2:
        blurred = blurred[:, :, None]
    if layout == "NCHW":
        blurred = blurred.transpose(2, 0, 1)
    return blurred[None].astype(x.dtype)


def center_prior(height: int, width: int, *, sigma: float = 0.25) -> np.ndarray:
    """A centred Gaussian, ``sigma`` a fraction of each side, peak 1: a no-information map."""
    ys = (np.arange(height) + 0.5) / height - 0.5
    xs = (np.arange(width) + 0.5) / width - 0.5
    g = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))
    return (g / g.max()).astype(np.float32)
