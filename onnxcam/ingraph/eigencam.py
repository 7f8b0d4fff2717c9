"""Eigen-CAM in the graph, as :mod:`onnxcam.methods.eigencam` (class-agnostic)::

    X = A as (h·w × K) rows, centred per channel
    M = X Xᵀ (h·w ≤ K) or Xᵀ X (else): the smaller Gram matrix, n × n, n = min(h·w, K)
    M ← M·M / ‖M·M‖_F, SQUARINGS times              # M^(2^SQUARINGS), normalised
    u = M u₀;  P = u (h·w side) or X u (K side)       # the first principal component's projection
    P ← -P when P · (m - mean m) < 0                  # m: the mean activation map
    L = ReLU(Up(P)) / max

Repeated squaring is power iteration unrolled: SQUARINGS = 8 is 2⁸ = 256 power steps, so the
angle to the exact first singular vector shrinks as (σ₂/σ₁)^512; each squaring costs n³
multiply-adds per image (49³ for a 7×7 map). ``u₀`` is the centred mean map (or its image
``Xᵀ m``) plus a small fixed vector, so it is never orthogonal to the component by accident.
The map is scale-free (divided by its maximum), so ``P`` is left unnormalised.
"""

from __future__ import annotations

import numpy as np

from .base import Cells, Site

__all__ = ["SQUARINGS", "build"]

#: Squarings of the Gram matrix: the equivalent of 2**SQUARINGS power-iteration steps.
SQUARINGS = 8
_TINY = 1e-30


def build(site: Site) -> Cells:
    b = site.b
    cells, k = site.cells, site.channels
    rows = b.op("Transpose", [site.rows()], perm=[0, 2, 1])  # (B, hw, K)
    centred = b.op("Sub", [rows, b.reduce("ReduceMean", rows, [1])])
    mean = b.reduce("ReduceMean", rows, [2])  # (B, hw, 1): the mean activation map
    mean = b.op("Sub", [mean, b.reduce("ReduceMean", mean, [1])])
    spread = b.op("Transpose", [centred], perm=[0, 2, 1])  # (B, K, hw)
    small_side = cells <= k
    if small_side:
        gram = b.op("MatMul", [centred, spread])  # (B, hw, hw)
        start = mean
    else:
        gram = b.op("MatMul", [spread, centred])  # (B, K, K)
        start = b.op("MatMul", [spread, mean])  # (B, K, 1)
    n = min(cells, k)
    tiny = b.const(_TINY, "tiny")
    gram = _normalised(site, gram, tiny)
    for _ in range(SQUARINGS):
        gram = _normalised(site, b.op("MatMul", [gram, gram]), tiny)
    nudge = np.random.default_rng(0).normal(size=(n, 1))
    nudge = 1e-3 * nudge / np.linalg.norm(nudge)
    unit = b.op("Div", [start, b.op("Add", [b.reduce("ReduceL2", start, [1]), tiny])])
    u = b.op("MatMul", [gram, b.op("Add", [unit, b.const(nudge, "nudge")])])
    projection = u if small_side else b.op("MatMul", [centred, u])  # (B, hw, 1)
    agree = b.reduce("ReduceSum", b.op("Mul", [projection, mean]), [1])
    sign = b.op(
        "Where",
        [b.op("Less", [agree, b.const(0.0, "zero")]), b.const(-1.0, "minus"), b.const(1.0, "one")],
    )
    projection = b.op("Mul", [projection, sign])
    return Cells(site.as_maps(projection, 1), "peak")


def _normalised(site: Site, matrix: str, tiny: str) -> str:
    b = site.b
    norm = b.reduce("ReduceL2", matrix, [1, 2])
    return b.op("Div", [matrix, b.op("Add", [norm, tiny])])
