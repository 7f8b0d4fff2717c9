"""Where an image sits in the model's input: stretched to fill it, or letterboxed.

``stretch`` resizes the whole image to the input size (each axis scaled on its own).
``letterbox`` scales both axes by ``r = min(H / h, W / w)``, centres the result and pads the
rest with grey 114, as Ultralytics and YOLOv5 do (``LetterBox(auto=False, center=True)``):
the image keeps its aspect ratio, so boxes and maps map back exactly.

Boxes are ``x0, y0, x1, y1`` in pixels (continuous coordinates: pixel ``i`` spans
``[i, i + 1)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ConfigError

__all__ = ["PAD_VALUE", "RESIZES", "Geometry", "fit_image"]

RESIZES = ("stretch", "letterbox")
PAD_VALUE = 114  # Ultralytics' letterbox grey, in 0..255 pixel values


@dataclass(frozen=True)
class Geometry:
    """How an ``image_h × image_w`` image maps into an ``input_h × input_w`` model input.

    Attributes:
        mode: ``stretch`` or ``letterbox``.
        scale_x, scale_y: input pixels per image pixel along each axis.
        left, top: padding before the image's content, in input pixels.
        content_w, content_h: the image's size inside the input, in input pixels.
    """

    mode: str
    image_h: int
    image_w: int
    input_h: int
    input_w: int
    scale_x: float
    scale_y: float
    left: int = 0
    top: int = 0
    content_w: int = 0
    content_h: int = 0

    @classmethod
    def of(cls, mode: str, image_hw: tuple[int, int], input_hw: tuple[int, int]) -> Geometry:
        """The geometry of ``mode`` for an image of ``image_hw`` into an input of ``input_hw``.

        Raises:
            ConfigError: an unknown mode.
        """
        (h, w), (H, W) = image_hw, input_hw
        if mode == "stretch":
            return cls("stretch", h, w, H, W, W / w, H / h, 0, 0, W, H)
        if mode != "letterbox":
            raise ConfigError(f"unknown resize '{mode}'; valid: {', '.join(RESIZES)}")
        r = min(H / h, W / w)
        cw, ch = round(w * r), round(h * r)
        dw, dh = (W - cw) / 2, (H - ch) / 2
        left, top = round(dw - 0.1), round(dh - 0.1)
        return cls("letterbox", h, w, H, W, cw / w, ch / h, left, top, cw, ch)

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes ``(..., 4)`` from image pixels to input pixels."""
        b = np.asarray(boxes, np.float64)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        shift = np.array([self.left, self.top, self.left, self.top], np.float64)
        return b * scale + shift

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes ``(..., 4)`` from input pixels to image pixels, clipped to the image."""
        b = np.asarray(boxes, np.float64)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        shift = np.array([self.left, self.top, self.left, self.top], np.float64)
        out = (b - shift) / scale
        limits = np.array([self.image_w, self.image_h, self.image_w, self.image_h], np.float64)
        return np.clip(out, 0.0, limits)

    def crop(self, plane: np.ndarray) -> np.ndarray:
        """The image's content of an input-sized ``(input_h, input_w)`` plane (the padding
        cut off)."""
        return plane[self.top : self.top + self.content_h, self.left : self.left + self.content_w]

    def map_to_image(self, saliency: np.ndarray) -> np.ndarray:
        """A map at input resolution as the image's ``(image_h, image_w)`` map: the padding
        cut off, then bilinear, clipped to [0, 1]."""
        content = np.ascontiguousarray(self.crop(saliency), dtype=np.float32)
        resized = cv2.resize(content, (self.image_w, self.image_h), interpolation=cv2.INTER_LINEAR)
        return np.clip(resized, 0.0, 1.0, out=resized)

    def describe(self) -> dict[str, object]:
        """For the record: the mode, the scale and the padding."""
        return {
            "resize": self.mode,
            "scale": [round(self.scale_x, 6), round(self.scale_y, 6)],
            "pad": [self.left, self.top],
        }


def fit_image(rgb: np.ndarray, height: int, width: int, mode: str) -> tuple[np.ndarray, Geometry]:
    """``rgb`` (uint8, H×W×3) fitted into ``height × width`` by ``mode``, and its geometry.

    ``stretch`` shrinks by area averaging (no aliasing, close to torchvision's antialiased
    resize) and enlarges bilinearly; ``letterbox`` resizes bilinearly and pads with 114, as
    Ultralytics does.
    """
    geometry = Geometry.of(mode, rgb.shape[:2], (height, width))
    if mode == "stretch":
        shrinking = width < rgb.shape[1] or height < rgb.shape[0]
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        return cv2.resize(rgb, (width, height), interpolation=interp), geometry
    size = (geometry.content_w, geometry.content_h)
    content = rgb if size == (rgb.shape[1], rgb.shape[0]) else cv2.resize(rgb, size)
    right = width - geometry.content_w - geometry.left
    bottom = height - geometry.content_h - geometry.top
    padded = cv2.copyMakeBorder(
        content, geometry.top, bottom, geometry.left, right, cv2.BORDER_CONSTANT,
        value=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )  # fmt: skip
    return padded, geometry
