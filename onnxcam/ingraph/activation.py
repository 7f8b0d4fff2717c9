"""The activation map in the graph: ``minmax(Up(mean_k A_k))``, as
:mod:`onnxcam.methods.activation` (class-agnostic: one map per image)."""

from __future__ import annotations

from .base import Cells, Site

__all__ = ["build"]


def build(site: Site) -> Cells:
    mean = site.b.reduce("ReduceMean", site.feature, [1])  # (B, 1, h, w)
    return Cells(mean, "minmax_last")
