"""What an in-graph method gets (:class:`Site`) and gives back (:class:`Cells`)."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..graph import Candidate, GraphIndex
from .builder import Builder, Classes

__all__ = ["Cells", "ClassOutput", "Site"]


@dataclass(frozen=True)
class ClassOutput:
    """The model output that class targets read: ``name`` (B, N) or (B, N, 1, 1), the
    activation the graph ends in (``softmax``, ``sigmoid`` or None)."""

    name: str
    classes: int
    activation: str | None


@dataclass(frozen=True)
class Site:
    """Where a method builds its map.

    Attributes:
        b: the builder adding to the exported copy.
        source: the model as it was before anything was added (sized; read, never changed).
        index: the index of ``source``.
        node: the explained feature map.
        feature: the tensor holding it in the exported graph as (B, K, h, w) float32.
        grid: (h, w).
        channels: K.
        output: the class output (None for a model without one).
        classes: the targets (None for a class-agnostic method).
        kernel: Recipro-CAM's mask of each cell, ``onehot`` or ``gaussian``.
    """

    b: Builder
    source: onnx.ModelProto
    index: GraphIndex
    node: Candidate
    feature: str
    grid: tuple[int, int]
    channels: int
    output: ClassOutput | None
    classes: Classes | None
    kernel: str = "onehot"  # Recipro-CAM's mask of each cell

    @property
    def cells(self) -> int:
        """h·w."""
        return self.grid[0] * self.grid[1]

    def rows(self) -> str:
        """The feature map as (B, K, h·w)."""
        return self.b.reshape(self.feature, [0, self.channels, self.cells])

    def as_maps(self, scores: str, targets: int) -> str:
        """Scores per cell (B, T, h·w) as (B, T, h, w)."""
        return self.b.reshape(scores, [0, targets, *self.grid])


@dataclass(frozen=True)
class Cells:
    """A method's scores per cell, (B, T, h, w), and how they become the map
    (:data:`~onnxcam.ingraph.builder.FINISHES`)."""

    name: str
    finish: str
