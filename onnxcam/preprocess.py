"""Images in, model-input tensors out: reading, presets, size, layout and colour order.

A pixel value ``p`` in 0..255 becomes ``(p * scale - mean) / std`` per colour channel,
in RGB order unless ``bgr`` is set (then ``mean``/``std`` are given in BGR order too).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import ops
from .errors import ConfigError
from .geometry import Geometry, fit_image
from .images import DEFAULT_MAX_PIXELS, MIN_SIDE, as_rgb, image_size_from_header, read_image
from .layouts import input_axes

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MIN_SIDE",
    "PRESETS",
    "InputSpec",
    "Normalization",
    "as_rgb",
    "baseline_tensor",
    "fit_tensor",
    "image_size_from_header",
    "read_image",
    "to_tensor",
]


@dataclass(frozen=True)
class Normalization:
    """``(pixel * scale - mean) / std``, per channel, in the model's colour order."""

    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1.0
    bgr: bool = False


PRESETS: dict[str, Normalization] = {
    "imagenet": Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255),
    "caffe": Normalization((103.939, 116.779, 123.68), (1.0, 1.0, 1.0), 1.0, bgr=True),
    "tf": Normalization((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 1 / 127.5),
    "unit": Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1 / 255),
    "raw": Normalization(),
}


@dataclass(frozen=True)
class InputSpec:
    """What the model's image input wants.

    Attributes:
        name: the input's name.
        layout: the input's layout, ``NCHW`` or ``NHWC`` (:data:`~onnxcam.layouts.INPUT_LAYOUTS`).
        height, width: spatial size in pixels.
        channels: 3 (colour) or 1 (grayscale).
        dtype: numpy dtype of the input.
    """

    name: str
    layout: str
    height: int
    width: int
    channels: int
    dtype: np.dtype

    def shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        """The input's shape for ``batch`` images, in its layout."""
        dims = [batch, 0, 0, 0]
        sizes = (self.channels, self.height, self.width)
        for axis, size in zip(input_axes(self.layout), sizes, strict=True):
            dims[axis] = size
        return dims[0], dims[1], dims[2], dims[3]


def to_tensor(
    rgb: np.ndarray, spec: InputSpec, norm: Normalization, resize: str = "stretch"
) -> np.ndarray:
    """Fit the whole image (no crop) into the model's size and normalise it.

    Returns:
        A (1, C, H, W) or (1, H, W, C) array of the input's dtype.
    """
    return fit_tensor(rgb, spec, norm, resize)[0]


def fit_tensor(
    rgb: np.ndarray, spec: InputSpec, norm: Normalization, resize: str = "stretch"
) -> tuple[np.ndarray, Geometry]:
    """:func:`to_tensor`, and where the image sits in the input (see :mod:`onnxcam.geometry`)."""
    fitted, geometry = fit_image(rgb, spec.height, spec.width, resize)
    return _normalize(fitted.astype(np.float32), spec, norm), geometry


def _normalize(pixels: np.ndarray, spec: InputSpec, norm: Normalization) -> np.ndarray:
    if spec.channels == 1:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)[:, :, None]
        mean = np.full(1, np.mean(norm.mean), np.float32)
        std = np.full(1, np.mean(norm.std), np.float32)
    else:
        if norm.bgr:
            pixels = pixels[:, :, ::-1]
        mean = np.asarray(norm.mean, np.float32)
        std = np.asarray(norm.std, np.float32)
    if np.any(np.asarray(std) == 0):
        raise ConfigError("std must not contain 0")
    values = (pixels * np.float32(norm.scale) - mean) / std
    return ops.as_dtype(ops.from_hwc(values, spec.layout)[None], spec.dtype)


def baseline_tensor(
    kind: str, x: np.ndarray, spec: InputSpec, norm: Normalization
) -> np.ndarray | None:
    """The baseline input ``X_b`` (README: Score-CAM, the default method), or None for ``none``.

    ``zero`` is zeros in the model's input space, ``black`` a preprocessed black image,
    ``blur`` the input under a Gaussian blur (sigma = 1/20 of the shorter side, at least 1).
    """
    if kind == "none":
        return None
    if kind == "zero":
        return np.zeros_like(x)
    if kind == "black":
        black = np.zeros((spec.height, spec.width, 3), np.float32)
        return _normalize(black, spec, norm)
    if kind == "blur":
        return ops.blur(x, spec.layout, sigma=max(1.0, min(spec.height, spec.width) / 20))
    raise ConfigError(f"unknown baseline '{kind}'; valid: none, zero, black, blur")
