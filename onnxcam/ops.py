"""Array operations shared by the methods and the metrics: resizing, normalising, masking.

``upsample`` is bilinear interpolation with half-pixel centres (OpenCV ``INTER_LINEAR``,
torch ``align_corners=False``) unless ``align_corners`` is set. Inputs are model-input tensors
of one image, ``(1, C, H, W)`` or ``(1, H, W, C)``; masks and maps are ``(n, H, W)``.
"""

from __future__ import annotations

import cv2
import numpy as np

from .layouts import INPUT_NCHW, FeatureLayout, feature_layout

__all__ = [
    "COMBINE_AT",
    "apply_masks",
    "as_dtype",
    "blend",
    "blur",
    "channels_first",
    "expand_masks",
    "from_hwc",
    "interp_matrix",
    "minmax",
    "saliency_map",
    "sigmoid",
    "softmax",
    "stack_maps",
    "to_hwc",
    "upsample",
]


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
    cols = np.ascontiguousarray(interp_matrix(w, size[1], align_corners=align_corners).T)
    tall = np.matmul(rows, maps.astype(np.float32, copy=False))  # (..., H, w)
    # the columns one map at a time, each a 2-D BLAS product of the same shape (a batched
    # product with a transposed view takes numpy's slow loop, 30 times slower for 16 maps to
    # 224 by 224; one product over all maps would round differently with their number)
    out = np.empty((*tall.shape[:-1], size[1]), np.float32)
    flat_in, flat_out = tall.reshape(-1, *tall.shape[-2:]), out.reshape(-1, *out.shape[-2:])
    for k in range(len(flat_in)):
        np.matmul(flat_in[k], cols, out=flat_out[k])
    return out


def minmax(maps: np.ndarray, *, eps: float = 0.0) -> np.ndarray:
    """Min-max each (..., h, w) map to [0, 1]; a constant map becomes all zeros."""
    lo = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - lo
    safe = np.where(span > 0, span + eps, 1.0)
    return np.where(span > 0, (maps - lo) / safe, 0.0).astype(np.float32)


#: Where a weighted sum of channels becomes a map: at the input's or the feature map's size.
COMBINE_AT = ("input", "feature")


def saliency_map(
    summed: np.ndarray,
    size: tuple[int, int],
    *,
    at: str = "input",
    relu: bool = True,
    eps: float = 0.0,
    renormalize: bool = False,
) -> np.ndarray:
    """The map of a score per feature-map cell ``S`` (h, w), e.g. a weighted sum of channels:
    (H, W) float32 in [0, 1].

    ``at="input"``: ``ReLU(Up(S)) / max`` (an all-zero map stays zero, never NaN);
    ``at="feature"``: ``Up(mm(ReLU(S)))`` (``mm(S)`` without ``relu``) with
    ``mm(C) = (C - min) / (max - min + eps)``, and with ``renormalize`` ``mm`` once more after
    upsampling (pytorch-grad-cam's ``scale_cam_image`` before and after ``cv2.resize``).
    """
    if at == "feature":
        small = minmax((np.maximum(summed, 0.0) if relu else summed)[None], eps=eps)[0]
        cam = upsample(small, size, align_corners=False)
        return minmax(cam[None], eps=eps)[0] if renormalize else cam
    cam = np.maximum(upsample(summed, size, align_corners=False), 0.0)
    peak = float(cam.max(initial=0.0))
    if peak <= 0.0 or not np.isfinite(peak):
        return np.zeros(size, np.float32)
    return (cam / peak).astype(np.float32)


def channels_first(acts: np.ndarray, layout: FeatureLayout | str) -> np.ndarray:
    """One image's feature map in ``layout`` (e.g. (h, w, K) or (K, h, w)) as (K, h, w)."""
    return feature_layout(layout).to_chw(acts[None])[0]


def expand_masks(masks: np.ndarray, layout: str) -> np.ndarray:
    """(n, H, W) masks broadcastable against (n, C, H, W) or (n, H, W, C) inputs."""
    return masks[:, None] if layout == INPUT_NCHW else masks[..., None]


def to_hwc(planes: np.ndarray, layout: str) -> np.ndarray:
    """One input's colour planes, (C, H, W) or (H, W, C) by the input's ``layout``, as
    (H, W, C)."""
    return planes.transpose(1, 2, 0) if layout == INPUT_NCHW else planes


def from_hwc(planes: np.ndarray, layout: str) -> np.ndarray:
    """(H, W, C) colour planes in the input's ``layout``: (C, H, W) or (H, W, C)."""
    return planes.transpose(2, 0, 1) if layout == INPUT_NCHW else planes


def apply_masks(x: np.ndarray, masks: np.ndarray, layout: str) -> np.ndarray:
    """``x ⊙ M_k`` for each mask, broadcast over colour channels, in the input's dtype.

    Args:
        x: the preprocessed input, (1, C, H, W) or (1, H, W, C).
        masks: (n, H, W) masks.
        layout: the input's layout (:data:`~onnxcam.layouts.INPUT_LAYOUTS`).
    """
    out = x.astype(np.float32, copy=False) * expand_masks(masks, layout)
    if np.issubdtype(x.dtype, np.integer):
        out = np.round(out)
    return out.astype(x.dtype, copy=False)


def mix(start: np.ndarray, finish: np.ndarray, masks: np.ndarray, layout: str) -> np.ndarray:
    """Per mask (n, H, W) in [0, 1]: ``finish ⊙ M + start ⊙ (1 - M)``, in ``start``'s dtype."""
    base = start.astype(np.float32, copy=False)
    weights = expand_masks(masks.astype(np.float32, copy=False), layout)
    return as_dtype(base + weights * (finish.astype(np.float32, copy=False) - base), start.dtype)


def blend(start: np.ndarray, finish: np.ndarray, taken: np.ndarray, layout: str) -> np.ndarray:
    """Per mask in ``taken`` (n, H, W) of booleans: ``finish`` where true, ``start`` elsewhere."""
    return np.where(expand_masks(taken, layout), finish, start).astype(start.dtype)


def blur(x: np.ndarray, layout: str, *, sigma: float, ksize: int = 0) -> np.ndarray:
    """Gaussian blur of a (1, C, H, W) / (1, H, W, C) input, each colour channel alone.

    ``ksize`` 0 lets OpenCV derive the kernel from ``sigma``; borders reflect (101).
    Blurring commutes with the per-channel affine normalisation, so blurring a normalised
    input equals normalising a blurred image.
    """
    planes = to_hwc(x[0].astype(np.float32), layout)
    blurred = cv2.GaussianBlur(planes, (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT_101)
    if blurred.ndim == 2:
        blurred = blurred[:, :, None]
    return as_dtype(from_hwc(blurred, layout)[None], x.dtype)


def as_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float values as a contiguous array of ``dtype``: rounded and clipped to its range when
    it is an integer type."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.round(values), info.min, info.max)
    return np.ascontiguousarray(values.astype(dtype))


def stack_maps(maps: list[np.ndarray]) -> np.ndarray:
    """Channel maps of several nodes, (K_i, h_i, w_i) each, as one (sum K_i, h, w) stack on
    the finest grid (bilinear, :func:`upsample`); one map is returned as it is."""
    if len(maps) == 1:
        return maps[0]
    h = max(m.shape[1] for m in maps)
    w = max(m.shape[2] for m in maps)
    return np.concatenate(
        [m if m.shape[1:] == (h, w) else upsample(m.astype(np.float32), (h, w)) for m in maps]
    )


def softmax(rows: np.ndarray, axis: int = 1) -> np.ndarray:
    """Softmax along ``axis`` in float64, stable for large values."""
    z = rows.astype(np.float64)
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def sigmoid(values: np.ndarray) -> np.ndarray:
    """Logistic function in float64, without overflow warnings."""
    z = values.astype(np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out
