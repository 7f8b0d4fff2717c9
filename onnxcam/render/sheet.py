"""Small pictures for reports: thumbnails, and a contact sheet as one PNG."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..confined import Confined

__all__ = ["SHEET_CAP", "THUMB_SIDE", "ascii_caption", "contact_sheet", "thumbnail", "write_jpeg"]

THUMB_SIDE = 200  # pixels, the longer side of a contact-sheet thumbnail
ORIGINAL_SIDE = 480  # pixels, the longer side of the original shown in the detail view
SHEET_CAP = 100  # images at most in contact_sheet.png (the HTML report shows them all)


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """``image`` (RGB) shrunk so its longer side is at most ``side`` (area averaging)."""
    height, width = image.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale == 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def write_jpeg(out: Confined, name: str, rgb: np.ndarray, *, quality: int = 85) -> None:
    """Write an RGB array as the JPEG ``name`` inside ``out`` (atomically)."""
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if ok:
        out.write(name, buf.tobytes())


def ascii_caption(text: str, limit: int = 28) -> str:
    """``text`` as printable ASCII for OpenCV's Hershey fonts (others become ``?``), cut."""
    plain = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return plain if len(plain) <= limit else plain[: limit - 1] + "~"


def contact_sheet(
    thumbs: Sequence[np.ndarray], captions: Sequence[str], *, columns: int = 8
) -> np.ndarray:
    """A grid of thumbnails with a caption under each, on white, uint8 in the thumbnails'
    channel order (RGB or BGR: the background and the captions are grey)."""
    cell_w, cell_h, text_h = THUMB_SIDE + 8, THUMB_SIDE + 8, 20
    rows = max(1, -(-len(thumbs) // columns))
    cols = min(columns, max(1, len(thumbs)))
    sheet = np.full((rows * (cell_h + text_h), cols * cell_w, 3), 255, np.uint8)
    for k, (thumb, caption) in enumerate(zip(thumbs, captions, strict=True)):
        r, c = divmod(k, columns)
        small = thumbnail(thumb)
        h, w = small.shape[:2]
        y0 = r * (cell_h + text_h) + 4 + (THUMB_SIDE - h) // 2
        x0 = c * cell_w + 4 + (THUMB_SIDE - w) // 2
        sheet[y0 : y0 + h, x0 : x0 + w] = small
        baseline = r * (cell_h + text_h) + cell_h + 12
        cv2.putText(sheet, ascii_caption(caption), (c * cell_w + 4, baseline),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.42, (20, 20, 20), 1, cv2.LINE_AA)  # fmt: skip
    return sheet
