"""Saliency maps as pictures: jet overlays and 8-bit grayscale maps."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import ConfigError

__all__ = ["overlay", "saliency_image"]


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
    heat = cv2.applyColorMap(saliency_image(saliency), cv2.COLORMAP_JET)
    cv2.cvtColor(heat, cv2.COLOR_BGR2RGB, dst=heat)
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0, dst=heat)
