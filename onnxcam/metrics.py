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

- ROAD, RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for
  Attribution Methods", ICML 2022): at each level (10 %, 20 %, ..., 90 % of the pixels) the most
  (MoRF) or least (LeRF) relevant pixels are replaced by noisy linear imputation: the harmonic
  interpolation of the pixels kept (each removed pixel the weighted mean of its 8 neighbours,
  1/6 across and 1/12 diagonally, as the authors' ``NoisyLinearImputer``), solved by conjugate
  gradients, plus Gaussian noise of 0.01 times the input's standard deviation (their 0.01 on
  unit-variance inputs). The score is the mean class probability over the levels: low for
  MoRF and high for LeRF are good.
- ADCC (Poppi et al., "Revisiting the evaluation of class activation mapping for
  explainability", CVPR-W 2021), as OpenVINO XAI computes it: the harmonic mean
  ``3 / (1/Coherency + 1/(1 - Complexity) + 1/(1 - AvgDrop))`` of the means over images of
  ``Coherency = (1 + ρ(L, L'))/2`` (``ρ`` the Pearson correlation of the map with the same
  method's map of the explanation input ``x ⊙ L``; 0 when either map is constant),
  ``Complexity = mean(L)`` and the Average Drop as a fraction. Higher is better.
- Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016)
  and the energy-based pointing game (Wang et al., Score-CAM): a hit when a maximum of the map
  lies in a ground-truth box of the target (a constant map points nowhere), and the share of
  the map's sum inside those boxes.

Curves are scored by ``score(count, inputs) -> (count,)``, where ``inputs(chunk)`` yields the
``count`` inputs at most ``chunk`` at a time; the caller decides how they are run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np

from . import ops

__all__ = [
    "ROAD_LEVELS",
    "ScoreFn",
    "adcc",
    "auc",
    "average_drop",
    "blur_input",
    "box_mask",
    "causal_curve",
    "center_prior",
    "coherency",
    "complexity",
    "energy_in_boxes",
    "impute_linear",
    "increase_in_confidence",
    "masked_by_map",
    "pointing_hit",
    "road_curve",
]

#: ROAD's removal levels: the share of pixels removed.
ROAD_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ROAD_NOISE = 0.01  # times the input's standard deviation
#: ROAD's imputation is solved to this relative residual: about 4x faster than 1e-6, and the
#: imputed pixels differ from that solution by at most about 0.01 on inputs in [0, 1].
ROAD_TOL = 1e-3
_NEIGHBOURS = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]], np.float64) / 12

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


def _ranks(saliency: np.ndarray) -> np.ndarray:
    """Each pixel's place in the order most salient first (ties by position), (H, W)."""
    order = np.argsort(-saliency.reshape(-1), kind="stable")
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    return rank.reshape(saliency.shape)


def impute_linear(
    x: np.ndarray,
    removed: np.ndarray,
    layout: str,
    *,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
    tol: float = 1e-6,
) -> np.ndarray:
    """ROAD's noisy linear imputation of the ``removed`` pixels (H, W) of one input.

    Each removed pixel becomes the weighted mean of its neighbours (1/6 across, 1/12
    diagonally; at the border, of those inside), kept or imputed: the discrete harmonic
    interpolation of the kept pixels, ``D u - W u = W x`` on the removed ones, solved per
    colour channel by conjugate gradients (the system is symmetric positive definite),
    starting from a blur of the kept pixels. Gaussian noise of standard deviation ``noise``
    is then added to the removed pixels. Returns an input like ``x``.
    """
    planes = ops.to_hwc(x[0].astype(np.float64), layout)
    holes = removed.astype(bool)
    if not holes.any():
        return x.copy()
    if holes.all():
        filled = np.broadcast_to(planes.mean(axis=(0, 1)), planes.shape).copy()
    else:
        filled = _harmonic(planes, holes, tol)
    if noise > 0:
        rng = rng or np.random.default_rng(0)
        filled[holes] += noise * rng.standard_normal((int(holes.sum()), planes.shape[2]))
    return ops.as_dtype(ops.from_hwc(filled, layout)[None], x.dtype)


def _filter(values: np.ndarray) -> np.ndarray:
    out = cv2.filter2D(values, -1, _NEIGHBOURS, borderType=cv2.BORDER_CONSTANT)
    return out.reshape(values.shape)


def _harmonic(planes: np.ndarray, holes: np.ndarray, tol: float) -> np.ndarray:
    """``planes`` (H, W, C) with the ``holes`` solved for by preconditioned conjugate
    gradients, every channel at once, starting from the solution at half the resolution."""
    h, w = planes.shape[:2]
    m = holes[:, :, None].astype(np.float64)
    kept = planes * (1.0 - m)
    if min(h, w) >= 32:  # coarse to fine: large holes converge in a few iterations
        half = (h // 2, w // 2)
        share = cv2.resize(1.0 - m[:, :, 0], half[::-1], interpolation=cv2.INTER_AREA)
        sums = cv2.resize(kept, half[::-1], interpolation=cv2.INTER_AREA).reshape(
            *half, planes.shape[2]
        )
        coarse_holes = share <= 0
        coarse = sums / np.maximum(share, 1e-12)[:, :, None]
        coarse = _harmonic(coarse, coarse_holes, tol) if coarse_holes.any() else coarse
        start = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).reshape(planes.shape)
    else:
        start = np.broadcast_to(
            kept.sum(axis=(0, 1)) / max(1.0, float((1 - m).sum())), planes.shape
        )
    degree = _filter(np.ones((h, w, 1)))  # the weights of the neighbours inside the image
    b = m * _filter(kept)

    def apply(u: np.ndarray) -> np.ndarray:
        return m * (degree * u - _filter(m * u))

    u = m * start
    r = b - apply(u)
    z = m * r / degree
    p = z.copy()
    rz = (r * z).sum(axis=(0, 1))
    scale = np.sqrt((b * b).sum(axis=(0, 1))) + 1e-30
    for _ in range(4 * (h + w)):
        if np.all(np.sqrt((r * r).sum(axis=(0, 1))) <= tol * scale):
            break
        ap = apply(p)
        curvature = (p * ap).sum(axis=(0, 1))
        alpha = rz / np.where(curvature > 0, curvature, 1.0)
        u = u + alpha * p
        r = r - alpha * ap
        z = m * r / degree
        rz_next = (r * z).sum(axis=(0, 1))
        p = z + (rz_next / np.where(rz > 0, rz, 1.0)) * p
        rz = rz_next
    return kept + m * u


def road_curve(
    score: ScoreFn,
    x: np.ndarray,
    saliency: np.ndarray,
    *,
    most_first: bool,
    layout: str,
    levels: Sequence[float] = ROAD_LEVELS,
    seed: int = 0,
) -> np.ndarray:
    """ROAD: the scores with ``levels`` of the pixels removed, most (``most_first``) or least
    relevant first, by noisy linear imputation (the noise is drawn from ``seed`` and the
    level, so every map is judged against the same noise). Returns (len(levels),) scores."""
    height, width = saliency.shape
    rank = _ranks(saliency if most_first else -saliency)
    noise = ROAD_NOISE * float(np.std(x.astype(np.float64)))

    def inputs(chunk: int) -> Iterator[np.ndarray]:
        for begin in range(0, len(levels), chunk):
            block = []
            for i, level in enumerate(levels[begin : begin + chunk], start=begin):
                removed = rank < math.ceil(level * height * width)
                rng = np.random.default_rng((seed, i))
                filled = impute_linear(x, removed, layout, noise=noise, rng=rng, tol=ROAD_TOL)
                block.append(filled)
            yield np.concatenate(block)

    return np.asarray(score(len(levels), inputs), np.float64)


def complexity(saliency: np.ndarray) -> float:
    """ADCC's complexity: the mean of the map (its L1 norm per pixel), in [0, 1]."""
    return float(np.mean(saliency, dtype=np.float64))


def coherency(saliency: np.ndarray, again: np.ndarray) -> float:
    """ADCC's coherency: ``(1 + ρ)/2`` of the map and the map of the explanation input; a
    constant map correlates with nothing (ρ = 0)."""
    a = saliency.astype(np.float64).ravel()
    b = again.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    rho = float((a * b).sum()) / denom if denom > 0 else 0.0
    return (1.0 + rho) / 2.0


def adcc(coherency: float, complexity: float, drop: float) -> float:
    """``3 / (1/Coherency + 1/(1 - Complexity) + 1/(1 - AvgDrop))`` (drop as a fraction);
    0 when any of the three terms is 0."""
    terms = (coherency, 1.0 - complexity, 1.0 - drop)
    if min(terms) <= 0:
        return 0.0
    return 3.0 / sum(1.0 / t for t in terms)


def box_mask(boxes: Sequence[Sequence[float]], size: tuple[int, int]) -> np.ndarray:
    """(H, W) booleans: the pixels whose centres lie in any box ``x0, y0, x1, y1`` (edges
    included)."""
    height, width = size
    ys = np.arange(height) + 0.5
    xs = np.arange(width) + 0.5
    inside = np.zeros(size, bool)
    for x0, y0, x1, y1 in boxes:
        rows = (ys >= y0) & (ys <= y1)
        cols = (xs >= x0) & (xs <= x1)
        inside |= rows[:, None] & cols[None, :]
    return inside


def pointing_hit(saliency: np.ndarray, inside: np.ndarray) -> bool:
    """A maximum of the map (any, when several tie) lies inside; a constant map never hits."""
    peak = saliency.max()
    if peak == saliency.min():
        return False
    return bool(np.any(inside & (saliency == peak)))


def energy_in_boxes(saliency: np.ndarray, inside: np.ndarray) -> float:
    """The share of the map's sum inside (0 for an all-zero map)."""
    total = float(saliency.sum(dtype=np.float64))
    return float(saliency[inside].sum(dtype=np.float64)) / total if total > 0 else 0.0


def blur_input(x: np.ndarray, layout: str) -> np.ndarray:
    """The insertion start: the input under RISE's Gaussian blur (11 px kernel, sigma 5)."""
    return ops.blur(x, layout, sigma=5.0, ksize=11)


def center_prior(height: int, width: int, *, sigma: float = 0.25) -> np.ndarray:
    """A centred Gaussian, ``sigma`` a fraction of each side, peak 1: a no-information map."""
    ys = (np.arange(height) + 0.5) / height - 0.5
    xs = (np.arange(width) + 0.5) / width - 0.5
    g = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))
    return (g / g.max()).astype(np.float32)
