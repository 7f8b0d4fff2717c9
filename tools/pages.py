"""Synthetic document pages with known layout boxes, for layout detectors (PP-PicoDet CDLA).

A page is white, 608×800 (width × height, the CDLA PicoDet's input), and holds a title, then
in a random order two or three paragraphs of text, a table (a ruled grid of numbers) and a
figure (a framed plot of two or three coloured curves), then paragraphs down to the bottom
margin (a page with an empty lower half drew every Score-CAM map of the PicoDet onto the empty
paper), each block in a random width and position, drawn with OpenCV's Hershey fonts. The
annotations are the tight boxes of those blocks' ink in pixels (``x0, y0`` inclusive, ``x1,
y1`` exclusive) with their CDLA class names (``title``, ``text``, ``table``, ``figure``).

Example:
    >>> from tools.pages import make_pages
    >>> page = make_pages(1, seed=0)[0]
    >>> page.image.shape, sorted(set(page.labels)) <= ["figure", "table", "text", "title"]
    ((800, 608, 3), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Page", "make_page", "make_pages"]

WIDTH, HEIGHT = 608, 800
_WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "model",
    "score",
    "layout",
    "table",
    "figure",
    "page",
    "detector",
]
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LINE = 21  # pixels from one line of body text (scale 0.5) to the next


@dataclass(frozen=True)
class Page:
    image: np.ndarray  # (HEIGHT, WIDTH, 3) RGB uint8
    boxes: np.ndarray  # (k, 4) float32 x0, y0, x1, y1
    labels: tuple[str, ...]


def _text(img: np.ndarray, rng: np.random.Generator, x0: int, y: int, x1: int, lines: int,
          scale: float, thick: int) -> int:  # fmt: skip
    """Lines of words between x0 and x1 from baseline y; returns the last line's bottom."""
    step = int(30 * scale) + 6  # _LINE at scale 0.5
    for i in range(lines):
        words, x = [], x0
        last = i == lines - 1
        limit = x0 + (x1 - x0) * (rng.uniform(0.3, 0.8) if last else 1.0)
        while True:
            word = str(rng.choice(_WORDS))
            width = cv2.getTextSize(word + " ", _FONT, scale, thick)[0][0]
            if x + width > limit and words:
                break
            words.append(word)
            x += width
        cv2.putText(img, " ".join(words), (x0, y + i * step), _FONT, scale, (0, 0, 0), thick,
                    cv2.LINE_AA)  # fmt: skip
    return y + (lines - 1) * step + int(8 * scale) + 2


def _table(img: np.ndarray, rng: np.random.Generator, x0: int, y0: int, x1: int) -> int:
    rows, cols = int(rng.integers(3, 7)), int(rng.integers(3, 6))
    row_h = int(rng.integers(24, 32))
    edges = np.linspace(x0, x1, cols + 1).astype(int)
    for r in range(rows + 1):
        cv2.line(img, (x0, y0 + r * row_h), (x1, y0 + r * row_h), (0, 0, 0), 1)
    for c in edges:
        cv2.line(img, (int(c), y0), (int(c), y0 + rows * row_h), (0, 0, 0), 1)
    for r in range(rows):
        for c in range(cols):
            value = "Name" if r == 0 else f"{rng.uniform(0, 100):.1f}"
            cv2.putText(img, value, (int(edges[c]) + 8, y0 + r * row_h + row_h - 8), _FONT, 0.45,
                        (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    return y0 + rows * row_h + 1


def _figure(img: np.ndarray, rng: np.random.Generator, x0: int, y0: int, x1: int) -> int:
    height = int(rng.integers(110, 170))
    y1 = y0 + height
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
    xs = np.arange(x0 + 10, x1 - 10)
    colours = [(200, 30, 30), (30, 140, 30), (30, 60, 200)]
    for colour in colours[: int(rng.integers(2, 4))]:
        freq, phase = rng.uniform(1, 4) * 2 * np.pi / (x1 - x0), rng.uniform(0, 2 * np.pi)
        ys = (y0 + y1) / 2 + (height / 2 - 15) * np.sin(freq * (xs - x0) + phase)
        points = np.stack([xs, ys], axis=1).astype(np.int32)
        cv2.polylines(img, [points], False, colour, 3, cv2.LINE_AA)
    return y1 + 1


def _ink_box(img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
    """The tight box of the non-white pixels in a block's band."""
    ink = img[y0:y1, x0:x1].min(axis=2) < 200
    ys, xs = np.nonzero(ink)
    return x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1


def make_page(rng: np.random.Generator) -> Page:
    img = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    boxes, labels = [], []
    blocks = ["text"] * int(rng.integers(2, 4)) + ["table", "figure"]
    rng.shuffle(blocks)
    blocks += ["text"] * 12  # paragraphs fill the rest of the page: no empty bottom
    y = 30
    title_x0 = int(rng.integers(40, 160))
    bottom = _text(img, rng, title_x0, y + 24, WIDTH - title_x0, 1, 0.9, 2) + 4
    boxes.append(_ink_box(img, title_x0, y, WIDTH - title_x0, bottom))
    labels.append("title")
    y = bottom + 24
    for kind in blocks:
        x0 = int(rng.integers(30, 60))
        x1 = WIDTH - int(rng.integers(30, 60))
        if kind != "text":
            inset = int(rng.integers(0, 120))
            x0, x1 = x0 + inset, x1 - inset
        if kind == "text":
            lines = min(int(rng.integers(3, 7)), (HEIGHT - 40 - y) // _LINE + 1)
            if lines < 1:
                break
            top, bottom = y, _text(img, rng, x0, y + 14, x1, lines, 0.5, 1)
        elif kind == "table":
            top, bottom = y, _table(img, rng, x0, y, x1)
        else:
            top, bottom = y, _figure(img, rng, x0, y, x1)
        if bottom > HEIGHT - 20:
            img[top:] = 255  # a table or figure that does not fit is left out
            continue
        boxes.append(_ink_box(img, x0, top, x1 + 1, bottom))
        labels.append(kind)
        y = bottom + int(rng.integers(20, 40))
    return Page(img, np.array(boxes, np.float32), tuple(labels))


def make_pages(n: int, *, seed: int = 0) -> list[Page]:
    rng = np.random.default_rng(seed)
    return [make_page(rng) for _ in range(n)]
