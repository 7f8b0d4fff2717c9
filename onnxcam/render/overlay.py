"""Saliency maps as pictures: jet overlays and 8-bit grayscale maps."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import ConfigError

__all__ = ["EMPHASIS_STEEPNESS", "emphasize", "overlay", "saliency_image"]

#: How steep the "emphasized" map's sigmoid is: 50 per unit of the map (Keras's Score-CAM
#: walkthrough), so values 0.1 away from the threshold are already at 1 % or 99 %.
EMPHASIS_STEEPNESS = 50.0


def emphasize(saliency: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``1 / (1 + exp(-50 (L - threshold)))``: the attended region near 1, the rest near 0."""
    z = np.clip(EMPHASIS_STEEPNESS * (saliency.astype(np.float32) - threshold), -60.0, 60.0)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def saliency_image(saliency: np.ndarray) -> np.ndarray:
    """The map as an 8-bit grayscale image (0 = not salient, 255 = most salient), rounded to
    nearest and saturated in one pass (no float copies of a large map)."""
    return cv2.convertScaleAbs(np.asarray(saliency, np.float32), alpha=255.0)


def overlay(image: np.ndarray, saliency: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """The jet-coloured map blended over the RGB image; ``alpha`` is the map's weight.

    Works in 8 bits throughout: a large photo costs a few bytes per pixel, not float copies.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha}")
    heat = _JET[saliency_image(saliency)]
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0, dst=heat)


# OpenCV's jet colour map as an RGB lookup table, built once (applyColorMap rebuilds it on
# every call, which dominates the cost of a thumbnail).
_JET = cv2.cvtColor(
    cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_JET),
    cv2.COLOR_BGR2RGB,
).reshape(256, 3)
