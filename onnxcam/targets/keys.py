"""Readers for the typed values of target keys (``box=1,2,3,4``, ``conf=0.25`` ...): each
takes the text and returns the value or raises ``ValueError``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .base import Key

__all__ = ["BOX", "box", "choice", "count", "positive", "show_box", "unit"]

Box = tuple[float, float, float, float]


def count(text: str) -> int:
    """A whole number, 0 or more."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def positive(text: str) -> int:
    """A whole number, 1 or more."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def unit(text: str) -> float:
    """A number in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(text)
    return value


def choice(options: tuple[str, ...]) -> Callable[[str], str]:
    """A reader that accepts one of ``options``."""

    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(text)
        return text

    return parse


def box(text: str) -> Box:
    """``x0,y0,x1,y1``: four finite numbers with ``x1 > x0`` and ``y1 > y0``."""
    values = tuple(float(v) for v in text.split(","))
    if len(values) != 4 or not all(np.isfinite(values)):
        raise ValueError(text)
    x0, y0, x1, y1 = values
    if not (x1 > x0 and y1 > y0):
        raise ValueError(text)
    return x0, y0, x1, y1


def show_box(value: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in value)


#: The ``box=`` key of the kinds that take one.
BOX = Key(box, "x0,y0,x1,y1 in image pixels, with x1 > x0 and y1 > y0", show_box)
