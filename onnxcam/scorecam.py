"""Score-CAM arithmetic in numpy: masks, channel weights, combination.

Score-CAM (Wang et al., CVPR-W 2020, https://arxiv.org/abs/1910.01279)::

    M_k = minmax(Up(A_k))                    # one mask per channel, in [0, 1]
    s_k = f(x ⊙ M_k) - f(X_b)                # score of the masked input, minus a baseline
    L   = ReLU(Σ_k s_k · Up(A_k)) / max(...)  # at input resolution

``Up`` is bilinear interpolation with half-pixel centres (OpenCV ``INTER_LINEAR``,
torch ``align_corners=False``) unless ``align_corners`` is set. No ONNX Runtime and no
OpenCV here: the module takes and returns arrays, so it is testable in isolation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

__all__ = [
    "COMPAT",
    "RANKS",
    "SCORES",
    "ScoreCamOptions",
    "apply_masks",
    "channel_weights",
    "combine",
    "distinct_channels",
    "interp_matrix",
    "iter_masks",
    "minmax",
    "top_channels",
    "upsample",
]


@dataclass(frozen=True)
class ScoreCamOptions:
    """The knobs on which Score-CAM implementations differ (see ``COMPAT`` for bundles).

    Attributes:
        score: ``"probability"`` (softmax of the output, unless it already is one),
            ``"logit"`` (the raw output) or ``"logit_delta"`` (raw output minus the clean
            image's).
        channel_softmax: replace the channel scores by their softmax across channels.
        align_corners: upsample masks with corner-aligned bilinear interpolation.
        normalize_first: min-max each channel at feature resolution, then upsample it.
        mask_eps: added to the mask min-max denominator.
        skip_constant: give constant channels weight 0 without running them; otherwise they
            are scored as the all-zero mask (as libraries that do not skip them do).
        combine_at: ``"input"``: ``ReLU(Up(Σ w_k A_k))`` divided by its max; ``"feature"``:
            ``minmax(ReLU(Σ w_k A_k))`` at feature resolution, then upsampled.
        cam_eps: added to the min-max denominators of the ``"feature"`` combination.
        renormalize: min-max the upsampled ``"feature"`` combination once more.
        top_channels: run only the N non-constant channels ranked highest by ``rank`` (fast
            mode; the others get weight 0). None runs every channel (exact).
        rank: ``"std"`` (spatial standard deviation: Faster Score-CAM, tf-keras-vis
            ``max_N``) or ``"max"`` (channel maximum: CSKIP).
    """

    score: str = "probability"
    channel_softmax: bool = False
    align_corners: bool = False
    normalize_first: bool = False
    mask_eps: float = 0.0
    skip_constant: bool = True
    combine_at: str = "input"
    cam_eps: float = 0.0
    renormalize: bool = False
    top_channels: int | None = None
    rank: str = "std"

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ConfigError(f"unknown score '{self.score}'; valid: {', '.join(SCORES)}")
        if self.combine_at not in ("input", "feature"):
            raise ConfigError(f"unknown combine_at '{self.combine_at}'; valid: input, feature")
        if self.rank not in RANKS:
            raise ConfigError(f"unknown rank '{self.rank}'; valid: {', '.join(RANKS)}")
        if self.top_channels is not None and self.top_channels < 1:
            raise ConfigError(f"top_channels must be at least 1, got {self.top_channels}")


SCORES = ("probability", "logit", "logit_delta")
RANKS = ("std", "max")

#: Named bundles that reproduce other implementations' maps.
COMPAT: dict[str, ScoreCamOptions] = {
    # haofanwang/Score-CAM: softmax probability, masks and combination at input resolution,
    # constant channels skipped. The final map is divided by its max (SPEC §2).
    "official": ScoreCamOptions(),
    # pytorch-grad-cam ScoreCAM: raw logit, align_corners=True masks with eps 1e-8, softmax
    # across channels, ReLU and min-max (eps 1e-7) at feature resolution, cv2.resize, min-max.
    "grad-cam": ScoreCamOptions(
        score="logit",
        channel_softmax=True,
        align_corners=True,
        mask_eps=1e-8,
        skip_constant=False,
        combine_at="feature",
        cam_eps=1e-7,
        renormalize=True,
    ),
    # torchcam ScoreCAM: per-channel min-max (eps 1e-8) at feature resolution, then
    # align_corners=False upsampling; logit minus clean logit, softmax across channels; ReLU
    # and min-max (eps 1e-8) at feature resolution; upsampled without renormalising.
    "torchcam": ScoreCamOptions(
        score="logit_delta",
        channel_softmax=True,
        normalize_first=True,
        mask_eps=1e-8,
        skip_constant=False,
        combine_at="feature",
        cam_eps=1e-8,
    ),
}


def interp_matrix(n_in: int, n_out: int, *, align_corners: bool = False) -> np.ndarray:
    """The (n_out, n_in) matrix of 1-D linear interpolation.

    With half-pixel centres, output ``i`` samples input ``(i + 0.5) * n_in / n_out - 0.5``
    clamped to the edges, exactly as OpenCV ``INTER_LINEAR`` and torch
    ``align_corners=False``; with ``align_corners`` it samples ``i * (n_in - 1) / (n_out - 1)``.
    """
    out = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = out * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        src = np.maximum((out + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    frac[lo == n_in - 1] = 0.0
    mat = np.zeros((n_out, n_in), np.float64)
    np.add.at(mat, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(mat, (np.arange(n_out), hi), frac)
    return mat.astype(np.float32)


def upsample(maps: np.ndarray, size: tuple[int, int], *, align_corners: bool = False) -> np.ndarray:
    """Bilinear resize of (K, h, w) or (h, w) maps to ``size`` = (H, W), as matrix products."""
    h, w = maps.shape[-2:]
    rows = interp_matrix(h, size[0], align_corners=align_corners)
    cols = interp_matrix(w, size[1], align_corners=align_corners)
    return np.matmul(np.matmul(rows, maps.astype(np.float32, copy=False)), cols.T)


def minmax(maps: np.ndarray, *, eps: float = 0.0) -> np.ndarray:
    """Min-max each (..., h, w) map to [0, 1]; a constant map becomes all zeros."""
    lo = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - lo
    safe = np.where(span > 0, span + eps, 1.0)
    return np.where(span > 0, (maps - lo) / safe, 0.0).astype(np.float32)


def distinct_channels(
    acts: np.ndarray, *, eps: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort channels into constant ones and groups that give the same mask.

    Two channels give the same mask when their min-max normalised maps are equal (for
    example exact copies), so each group needs one masked pass.

    Args:
        acts: (K, h, w) activations.
        eps: the mask denominator's eps (with eps > 0 only exact copies are merged).

    Returns:
        ``(constant, representatives, owner)``: a boolean (K,) mask of constant channels;
        the indices of the channels to run, one per distinct mask; and for every channel
        the position in ``representatives`` whose score it takes (-1 for constant ones).
    """
    k = acts.shape[0]
    flat = acts.reshape(k, -1)
    constant = flat.max(axis=1) == flat.min(axis=1)
    normalized = minmax(acts, eps=eps).reshape(k, -1)
    owner = np.full(k, -1, np.int64)
    seen: dict[bytes, int] = {}
    reps: list[int] = []
    for i in np.flatnonzero(~constant):
        key = normalized[i].tobytes()
        if key not in seen:
            seen[key] = len(reps)
            reps.append(int(i))
        owner[i] = seen[key]
    return constant, np.asarray(reps, np.int64), owner


def top_channels(acts: np.ndarray, n: int, rank: str = "std") -> np.ndarray:
    """Boolean (K,) mask of the ``n`` non-constant channels with the largest spatial std
    (``rank="std"``) or maximum (``rank="max"``); ties go to the lower index."""
    flat = acts.reshape(acts.shape[0], -1).astype(np.float64)
    key = flat.std(axis=1) if rank == "std" else flat.max(axis=1)
    constant = flat.max(axis=1) == flat.min(axis=1)
    key = np.where(constant, -np.inf, key)
    order = np.argsort(-key, kind="stable")
    keep = np.zeros(acts.shape[0], bool)
    keep[order[: min(n, int((~constant).sum()))]] = True
    return keep


def iter_masks(
    acts: np.ndarray,
    channels: np.ndarray,
    size: tuple[int, int],
    chunk: int,
    options: ScoreCamOptions,
) -> Iterator[np.ndarray]:
    """Masks M_k for the given channels, ``chunk`` at a time, as (n, H, W) float32 arrays.

    Only one chunk of upsampled maps exists at any time, whatever K is.
    """
    for start in range(0, len(channels), chunk):
        part = acts[channels[start : start + chunk]]
        if options.normalize_first:
            masks = upsample(
                minmax(part, eps=options.mask_eps), size, align_corners=options.align_corners
            )
        else:
            masks = minmax(
                upsample(part, size, align_corners=options.align_corners), eps=options.mask_eps
            )
        yield masks


def apply_masks(x: np.ndarray, masks: np.ndarray, layout: str) -> np.ndarray:
    """``x ⊙ M_k`` for each mask, broadcast over colour channels, in the input's dtype.

    Args:
        x: the preprocessed input, (1, C, H, W) or (1, H, W, C).
        masks: (n, H, W) masks.
        layout: ``"NCHW"`` or ``"NHWC"``.
    """
    expanded = masks[:, None] if layout == "NCHW" else masks[..., None]
    out = x.astype(np.float32, copy=False) * expanded
    if np.issubdtype(x.dtype, np.integer):
        out = np.round(out)
    return out.astype(x.dtype, copy=False)


def channel_weights(
    scores: np.ndarray, baseline: float, *, channel_softmax: bool = False
) -> np.ndarray:
    """``s_k = f(X_k) - f(X_b)``, or their softmax across channels."""
    weights = scores.astype(np.float64) - baseline
    if channel_softmax:
        shifted = np.exp(weights - weights.max(initial=-np.inf))
        weights = shifted / shifted.sum()
    return weights


def combine(
    acts: np.ndarray, weights: np.ndarray, size: tuple[int, int], options: ScoreCamOptions
) -> np.ndarray:
    """The saliency map from activations (K, h, w) and channel weights (K,), (H, W) in [0, 1].

    An all-zero map stays all zero.
    """
    summed = np.tensordot(weights.astype(np.float64), acts.astype(np.float64), axes=1)
    if options.combine_at == "feature":
        small = minmax(np.maximum(summed, 0.0)[None], eps=options.cam_eps)[0]
        cam = upsample(small, size, align_corners=False)
        return minmax(cam[None], eps=options.cam_eps)[0] if options.renormalize else cam
    cam = np.maximum(upsample(summed, size, align_corners=False), 0.0)
    peak = float(cam.max(initial=0.0))
    if peak <= 0.0 or not np.isfinite(peak):
        return np.zeros(size, np.float32)
    return (cam / peak).astype(np.float32)
