"""What a feature map's axes mean, and how to read it as ``(C, h, w)`` per sample and back.

A layout, not the code that reads a map, knows where the channels and the grid are. Every
explained node (:class:`onnxcam.graph.Candidate`) carries one; methods see maps as
``(B, C, h, w)`` (:meth:`FeatureLayout.to_chw`), and perturbed maps go back into the model's own
layout (:meth:`FeatureLayout.from_chw`). The layouts are the 4-D grids :data:`NCHW` and
:data:`NHWC` (channels last: Keras, and Swin's blocks), and :class:`TokenLayout`: a
transformer's ``(B, prefix + h·w, D)`` tokens, or ``(prefix + h·w, B, D)`` sequence first
(OpenAI CLIP's export), whose grid and prefix tokens (class, distillation, register tokens)
are read from the graph (:mod:`onnxcam.graph.places`), never guessed from a square root.

The image input's layout is another thing: a plain string (:data:`INPUT_LAYOUTS`), as the
record and ``--layout`` show it, whose axes :func:`input_axes` gives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "FEATURE_LAYOUTS",
    "INPUT_LAYOUTS",
    "INPUT_NCHW",
    "INPUT_NHWC",
    "NCHW",
    "NHWC",
    "FeatureLayout",
    "GridLayout",
    "TokenLayout",
    "feature_layout",
    "input_axes",
]

#: A dimension as shape inference gives it: an int, a symbol, or unknown.
Dim = Any


class FeatureLayout(ABC):
    """How a feature map's axes are laid out (the batch axis first, for now always).

    A layout compares equal to its name as a string, so code and records that held the name
    keep working; ``str(layout)`` is the name.
    """

    name: str
    #: The rank of the maps it describes.
    rank: int
    #: The axis of the channels (features) in the map.
    channel_axis: int
    #: The axes a global average pooling of the map reduces (the grid, or the tokens).
    spatial_axes: tuple[int, ...]

    @abstractmethod
    def grid(self, shape: Sequence[Dim]) -> tuple[Dim, Dim]:
        """(h, w) of a map of ``shape``."""

    def channels(self, shape: Sequence[Dim]) -> Dim:
        """The number of channels C of a map of ``shape``."""
        return shape[self.channel_axis]

    @abstractmethod
    def to_chw(self, maps: np.ndarray) -> np.ndarray:
        """Maps in this layout as ``(B, C, h, w)`` (a view where one is possible)."""

    @abstractmethod
    def from_chw(self, maps: np.ndarray, clean: np.ndarray | None = None) -> np.ndarray:
        """``(B, C, h, w)`` maps in this layout (a view where one is possible).

        ``clean`` is the map this layout describes for one image, as the model gave it: what
        the maps do not hold (a transformer's prefix tokens) is taken from it.
        """

    def describe(self, shape: Sequence[Dim]) -> str:
        """The layout in words, for ``onnxcam nodes`` and the record."""
        return self.name

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<FeatureLayout {self.name}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return other == self.name
        if isinstance(other, FeatureLayout):
            return type(other) is type(self) and vars(other) == vars(self)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)


class GridLayout(FeatureLayout):
    """A 4-D map whose batch, channel and two grid axes are a permutation of ``(B, C, h, w)``.

    Args:
        name: its name (``NCHW``).
        order: where each axis of ``(B, C, h, w)`` is in the map, e.g. ``(0, 3, 1, 2)`` for
            ``(B, h, w, C)``.
    """

    rank = 4

    def __init__(self, name: str, order: tuple[int, int, int, int]) -> None:
        self.name = name
        self.order = order
        self.channel_axis = order[1]
        self.spatial_axes = (order[2], order[3])
        self._back = tuple(order.index(axis) for axis in range(4))

    def grid(self, shape: Sequence[Dim]) -> tuple[Dim, Dim]:
        return shape[self.order[2]], shape[self.order[3]]

    def to_chw(self, maps: np.ndarray) -> np.ndarray:
        return maps if self.order == (0, 1, 2, 3) else np.transpose(maps, self.order)

    def from_chw(self, maps: np.ndarray, clean: np.ndarray | None = None) -> np.ndarray:
        return maps if self.order == (0, 1, 2, 3) else np.transpose(maps, self._back)


class TokenLayout(FeatureLayout):
    """A transformer's tokens: ``(B, prefix + h·w, D)``, or sequence first ``(prefix + h·w, B,
    D)``; the grid's cells row by row after ``prefix`` tokens that are not cells (the class
    token, DeiT's distillation token, DINOv2's registers).

    Args:
        grid: the cells' (h, w).
        prefix: tokens before the cells.
        sequence_first: the tokens' axis comes before the batch's.
    """

    rank = 3
    channel_axis = 2

    def __init__(self, grid: tuple[int, int], prefix: int = 0, *, sequence_first: bool = False):
        self.name = "LNC" if sequence_first else "NLC"
        self.hw = (int(grid[0]), int(grid[1]))
        self.prefix = int(prefix)
        self.sequence_first = sequence_first
        self.spatial_axes = (0,) if sequence_first else (1,)

    def grid(self, shape: Sequence[Dim]) -> tuple[Dim, Dim]:
        return self.hw

    def describe(self, shape: Sequence[Dim]) -> str:
        h, w = self.hw
        first = ", sequence first" if self.sequence_first else ""
        return f"tokens {h}×{w}, {self.prefix} prefix{first}"

    def to_chw(self, maps: np.ndarray) -> np.ndarray:
        if self.sequence_first:
            maps = maps.transpose(1, 0, 2)
        (h, w), p = self.hw, self.prefix
        cells = maps[:, p : p + h * w, :]
        return cells.reshape(maps.shape[0], h, w, maps.shape[2]).transpose(0, 3, 1, 2)

    def from_chw(self, maps: np.ndarray, clean: np.ndarray | None = None) -> np.ndarray:
        n, c, h, w = maps.shape
        cells = maps.transpose(0, 2, 3, 1).reshape(n, h * w, c)
        if self.prefix:
            if clean is None:
                raise ValueError("a token map with prefix tokens needs the clean map to fill them")
            first = clean.transpose(1, 0, 2) if self.sequence_first else clean
            prefix = np.broadcast_to(first[:1, : self.prefix, :], (n, self.prefix, c))
            cells = np.concatenate([prefix.astype(cells.dtype), cells], axis=1)
        return cells.transpose(1, 0, 2) if self.sequence_first else cells


#: Channels first, ``(B, C, h, w)``: what PyTorch and Paddle export.
NCHW: FeatureLayout = GridLayout("NCHW", (0, 1, 2, 3))
#: Channels last, ``(B, h, w, C)``: what TensorFlow/Keras export.
NHWC: FeatureLayout = GridLayout("NHWC", (0, 3, 1, 2))

#: The grid layouts, by name (a :class:`TokenLayout` is made for its grid and prefix).
FEATURE_LAYOUTS: dict[str, FeatureLayout] = {layout.name: layout for layout in (NCHW, NHWC)}


def feature_layout(layout: FeatureLayout | str) -> FeatureLayout:
    """The layout named ``layout`` (a layout is returned as it is).

    Raises:
        ValueError: no layout has that name.
    """
    if isinstance(layout, FeatureLayout):
        return layout
    try:
        return FEATURE_LAYOUTS[layout]
    except KeyError:
        raise ValueError(
            f"unknown feature layout '{layout}'; valid: {', '.join(FEATURE_LAYOUTS)}"
        ) from None


# ----------------------------------------------------------------------------- the image input

#: The image input's layouts, as the record and ``--layout`` name them: a rank-4 image batch
#: with its colour channels first or last (not a :class:`FeatureLayout`).
INPUT_LAYOUTS: tuple[str, str] = ("NCHW", "NHWC")
INPUT_NCHW, INPUT_NHWC = INPUT_LAYOUTS


def input_axes(layout: str) -> tuple[int, int, int]:
    """The axes of the colour channels, the height and the width in an input of ``layout``."""
    return (1, 2, 3) if layout == INPUT_NCHW else (3, 1, 2)
