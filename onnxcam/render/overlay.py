"""Saliency maps as pictures: jet overlays and 8-bit grayscale maps."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..errors import ConfigError

__all__ = ["EMPHASIS_STEEPNESS", "Mark", "draw_marks", "emphasize", "overlay", "saliency_image"]

#: A box to draw over an overlay, ``x0, y0, x1, y1`` in the image's pixels, and its caption.
Mark = tuple[tuple[float, float, float, float], str]

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


def overlay(
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    alpha: float = 0.5,
    marks: Sequence[Mark] = (),
) -> np.ndarray:
    """The jet-coloured map blended over the RGB image; ``alpha`` is the map's weight;
    ``marks`` (boxes and captions, e.g. the explained detection) are drawn on top.

    Works in 8 bits throughout: a large photo costs a few bytes per pixel, not float copies.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha}")
    heat = _JET[saliency_image(saliency)]
    blended = cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0, dst=heat)
    return draw_marks(blended, marks) if marks else blended


def draw_marks(rgb: np.ndarray, marks: Sequence[Mark]) -> np.ndarray:
    """Draw each box (white, outlined in black so it shows on any colour) and its caption
    (printable ASCII only: OpenCV's fonts have no other glyphs) on ``rgb``, in place."""
    height, width = rgb.shape[:2]
    thick = max(1, round(min(height, width) / 250))
    scale = max(0.35, min(height, width) / 700)
    for (x0, y0, x1, y1), caption in marks:
        p0 = (round(x0), round(y0))
        p1 = (round(x1) - 1, round(y1) - 1)
        cv2.rectangle(rgb, p0, p1, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.rectangle(rgb, p0, p1, (255, 255, 255), thick, cv2.LINE_AA)
        text = "".join(c if 32 <= ord(c) < 127 else "?" for c in caption)[:40]
        if not text:
            continue
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = p0[1] - 4 if p0[1] - th - base - 4 >= 0 else min(height - base, p1[1] + th + 4)
        cv2.rectangle(rgb, (p0[0], ty - th - 2), (p0[0] + tw + 4, ty + base), (0, 0, 0), -1)
        cv2.putText(rgb, text, (p0[0] + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thick, cv2.LINE_AA)  # fmt: skip
    return rgb


# OpenCV's jet colour map as an RGB lookup table, built once (applyColorMap rebuilds it on
# every call, which dominates the cost of a thumbnail).
_JET = cv2.cvtColor(
    cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_JET),
    cv2.COLOR_BGR2RGB,
).reshape(256, 3)
