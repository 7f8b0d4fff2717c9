"""Saliency maps as pictures: jet overlays and 8-bit grayscale maps."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import ConfigError

__all__ = ["overlay", "saliency_image"]


def saliency_image(saliency: np.ndarray) -> np.ndarray:
    """The map as an 8-bit grayscale image (0 = not salient, 255 = most salient)."""
    return np.clip(np.round(saliency * 255.0), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, saliency: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """The jet-coloured map blended over the RGB image; ``alpha`` is the map's weight."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha}")
    heat = cv2.applyColorMap(saliency_image(saliency), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    blended = image.astype(np.float32) * (1.0 - alpha) + heat.astype(np.float32) * alpha
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
