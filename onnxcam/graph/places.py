"""Where the image grid lies in each tensor: followed from the image input, op by op.

A tensor computed from the image still lays its features out on the image when two of its
axes are the grid's rows and columns (a convolution's ``(N, C, h, w)``, a Swin block's
channels-last ``(N, h, w, C)``), or when one axis holds the grid's cells as tokens, row by row,
after some tokens that are not cells (a ViT's ``(N, 1 + h·w, D)``: the class token first;
DeiT's distillation token and DINOv2's registers make more). :func:`find_places` gives every
such tensor its :class:`Place`, from the graph's structure alone:

- ops that compute on the grid (Conv, pooling, Resize, SpaceToDepth...) give their output a
  grid of its own, in ONNX's channels-first order;
- Transpose moves the axes; Reshape, Flatten, Squeeze and Unsqueeze keep the grid when its
  axes survive, turn rows and columns into tokens when exactly those two are merged, and
  tokens back into rows and columns when they are split into the grid's h and w (a decoder
  after a transformer); an axis split into (coarse, fine) keeps the coarse grid (a patch
  merging);
- Concat along the token axis counts what it puts before the cells as prefix tokens (the class
  token, registers); Slice and Split along it keep the cells and drop or keep prefix tokens;
  a Slice with a step along the grid keeps a coarser grid;
- any other op keeps its input's place when the output has the input's rank and the grid's
  axes keep their sizes (activations, normalisation, a per-token MatMul, a residual Add);
  otherwise the grid is gone (pooling into a vector, the class token taken out).

Nothing is read from names, and nothing is guessed from a square root.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

if TYPE_CHECKING:
    from .index import Dim, GraphIndex

__all__ = ["Place", "find_places"]

# Ops that compute on an (N, C, h, w) grid and give their output a grid of its own.
_GRID_OPS = {
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
    "DepthToSpace", "SpaceToDepth", "MaxUnpool", "DeformConv", "Col2Im",
}  # fmt: skip
# Ops that change the sizes of the axes they resize, whichever those are.
_RESIZING_OPS = {"Resize", "Upsample"}
# Ops that only regroup the axes: a grid survives them when its axes do.
_REGROUPING_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}


@dataclass(frozen=True)
class Place:
    """Where the image grid lies in a tensor.

    Attributes:
        grid: the grid's (h, w), in cells.
        axes: the axes of its rows and columns (a grid), or the one axis of its tokens.
        prefix: tokens only: how many tokens come before the grid's cells on that axis.
    """

    grid: tuple[Dim, Dim]
    axes: tuple[int, ...]
    prefix: int = 0

    @property
    def tokens(self) -> bool:
        """True when the grid's cells lie along one axis, as tokens."""
        return len(self.axes) == 1


def find_places(index: GraphIndex) -> dict[str, Place]:
    """The :class:`Place` of every tensor computed from the image that still has its grid."""
    places: dict[str, Place] = {}
    if index.inputs:
        shape = index.shape(index.inputs[0])
        if shape is not None and len(shape) == 4:
            nhwc = shape[3] in (1, 3) and shape[1] not in (1, 3)
            axes = (1, 2) if nhwc else (2, 3)
            places[index.inputs[0]] = Place((shape[axes[0]], shape[axes[1]]), axes)
    for node in index.nodes:
        sources = [(name, places[name]) for name in node.input if name in places]
        if not sources:
            continue
        for out in node.output:
            if not out:
                continue
            shape = index.shape(out)
            if shape is None:
                places[out] = sources[0][1]  # what shape inference cannot say is kept
                continue
            place = _place(index, node, sources, out, shape)
            if place is not None:
                places[out] = place
    return places


def _place(
    index: GraphIndex,
    node: onnx.NodeProto,
    sources: list[tuple[str, Place]],
    out: str,
    shape: tuple[Dim, ...],
) -> Place | None:
    """The place of ``node``'s output ``out`` (of ``shape``), from its inputs' places."""
    op = node.op_type
    name, source = sources[0]
    before = index.shape(name)
    if op in _GRID_OPS:  # on the rows and columns of an (N, C, h, w) grid, not on tokens
        grid_in = not source.tokens and source.axes == (2, 3) and name == node.input[0]
        return Place((shape[2], shape[3]), (2, 3)) if grid_in and len(shape) == 4 else None
    if before is None:
        return None
    if op == "Transpose":
        perm = _ints_attr(node, "perm") or list(reversed(range(len(before))))
        return replace(source, axes=tuple(perm.index(a) for a in source.axes))
    if op in _REGROUPING_OPS:
        return _regrouped(source, before, shape)
    if op in _RESIZING_OPS:
        if len(shape) == len(before) and not source.tokens:
            return Place((shape[source.axes[0]], shape[source.axes[1]]), source.axes)
        return None
    if op == "Slice":
        return _sliced(index, node, source, before, shape)
    if op == "Split":
        return _split(index, node, source, before, out)
    if op == "Concat":
        return _concatenated(index, node, source, name, shape)
    for tensor, kept in sources:  # the input whose grid the output keeps (x, not a gate)
        if _kept(kept, index.shape(tensor) or (), shape):
            return kept
    return None


def _kept(source: Place, before: Sequence[Dim], shape: Sequence[Dim]) -> bool:
    """The output has the input's rank and the grid's axes keep their sizes."""
    if len(before) != len(shape):
        return False
    return all(_same(before[a], shape[a]) for a in source.axes)


def _same(a: Dim, b: Dim) -> bool:
    return not isinstance(a, int) or not isinstance(b, int) or a == b


def _ints_attr(node: onnx.NodeProto, name: str) -> list[int] | None:
    for attr in node.attribute:
        if attr.name == name:
            return list(attr.ints) if attr.ints else [int(attr.i)]
    return None


def _int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


# ----------------------------------------------------------------------------- regrouping


def _groups(
    before: Sequence[Dim], after: Sequence[Dim]
) -> list[tuple[list[int], list[int]]] | None:
    """Axes of ``before`` and ``after`` grouped where a reshape maps one onto the other (axes
    of size 1 left out); None when the sizes do not allow it to be told (unknown sizes inside
    a merge, say)."""
    a: list[tuple[int, Dim]] = [(i, d) for i, d in enumerate(before) if d != 1]
    b: list[tuple[int, Dim]] = [(j, d) for j, d in enumerate(after) if d != 1]
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        (ia, da), (jb, db) = a[i], b[j]
        i, j = i + 1, j + 1
        if not isinstance(da, int) or not isinstance(db, int):
            if isinstance(da, int) or isinstance(db, int):
                return None
            if da != db and not (ia == 0 and jb == 0):  # the batch, under two symbols
                return None
            groups.append(([ia], [jb]))
            continue
        left, right = [ia], [jb]
        pa, pb = da, db
        while pa != pb:
            na = a[i][1] if i < len(a) else None
            nb = b[j][1] if j < len(b) else None
            if pa < pb and isinstance(na, int):
                left.append(a[i][0])
                pa *= na
                i += 1
            elif pb < pa and isinstance(nb, int):
                right.append(b[j][0])
                pb *= nb
                j += 1
            else:
                return None
        groups.append((left, right))
    if i < len(a) or j < len(b):
        return None
    return groups


def _solved(before: Sequence[Dim], after: Sequence[Dim]) -> tuple[list[Dim], list[Dim]]:
    """Both shapes, with the one size that shape inference left unknown on a side computed
    from the other (a Reshape to ``(batch, C, -1)``: the batch unknown keeps ``-1`` unknown)."""
    sides = [list(before), list(after)]
    batch = bool(before and after) and not isinstance(before[0], int)
    start = 1 if batch and not isinstance(after[0], int) else 0
    for k in (0, 1):
        dims, other = sides[k], sides[1 - k]
        unknown = [i for i in range(start, len(dims)) if not isinstance(dims[i], int)]
        if len(unknown) != 1 or not all(isinstance(d, int) for d in other[start:]):
            continue
        total = math.prod(d for d in other[start:] if isinstance(d, int))
        rest = math.prod(
            d for i, d in enumerate(dims[start:], start) if i != unknown[0] and isinstance(d, int)
        )
        if rest and total % rest == 0:
            dims[unknown[0]] = total // rest
    return sides[0], sides[1]


def _regrouped(source: Place, before: Sequence[Dim], after: Sequence[Dim]) -> Place | None:
    """The place after a reshape (see the module docstring)."""
    before, after = _solved(before, after)
    groups = _groups(before, after)
    if groups is None:
        return None
    where = {axis: group for group in groups for axis in group[0]}
    if source.tokens:
        group = where.get(source.axes[0])
        if group is None or group[0] != [source.axes[0]]:
            return None
        outs = group[1]
        if len(outs) == 1:
            return replace(source, axes=(outs[0],))
        if source.prefix == 0 and len(outs) == 2:
            grid = (after[outs[0]], after[outs[1]])
            if all(_same(x, y) for x, y in zip(grid, source.grid, strict=True)):
                return Place(source.grid, (outs[0], outs[1]))
        return None
    rows, cols = (where.get(a) for a in source.axes)
    if rows is None or cols is None:
        return None
    if rows is cols:  # rows and columns merged into one axis: tokens
        if rows[0] == list(source.axes) and len(rows[1]) == 1:
            return Place(source.grid, (rows[1][0],))
        return None
    if rows[0] != [source.axes[0]] or cols[0] != [source.axes[1]]:
        return None
    # each axis kept, or split into (coarse, fine): the first part is the coarser grid
    return Place((after[rows[1][0]], after[cols[1][0]]), (rows[1][0], cols[1][0]))


# ----------------------------------------------------------------------------- slicing


def _sliced(
    index: GraphIndex,
    node: onnx.NodeProto,
    source: Place,
    before: Sequence[Dim],
    after: Sequence[Dim],
) -> Place | None:
    if len(before) != len(after):
        return None
    starts: Any
    ends: Any
    axes: Any
    steps: Any
    if len(node.input) >= 3:
        values = [index.constant(n) if n else None for n in node.input[1:5]]
        starts, ends = values[0], values[1]
        axes = values[2] if len(values) > 2 else None
        steps = values[3] if len(values) > 3 else None
    else:  # opset < 10: attributes
        starts, ends = _ints_attr(node, "starts"), _ints_attr(node, "ends")
        axes, steps = _ints_attr(node, "axes"), None
    if starts is None or ends is None:
        return source if _kept(source, before, after) else None
    starts_ = [int(v) for v in np.asarray(starts).reshape(-1)]
    ends_ = [int(v) for v in np.asarray(ends).reshape(-1)]
    axes_ = (
        [int(v) % len(before) for v in np.asarray(axes).reshape(-1)]
        if axes is not None
        else list(range(len(starts_)))
    )
    steps_ = [int(v) for v in np.asarray(steps).reshape(-1)] if steps is not None else []
    steps_ += [1] * (len(axes_) - len(steps_))
    place = source
    for axis, start, end, step in zip(axes_, starts_, ends_, steps_, strict=False):
        if axis not in source.axes:
            continue
        size = before[axis]
        if not isinstance(size, int) or step < 1:
            return None
        start, end = _clamp(start, size), _clamp(end, size)
        if source.tokens:
            kept = _kept_tokens(place, size, start, end, step)
            if kept is None:
                return None
            place = kept
        elif not (start < step and end >= size - (size - 1) % step):
            return None  # a part of the grid (a roll), not a coarser grid of all of it
    if not source.tokens and place is source:
        grid = tuple(after[a] for a in source.axes)
        place = Place((grid[0], grid[1]), source.axes)
    return place


def _clamp(value: int, size: int) -> int:
    return max(0, min(size, value + size if value < 0 else value))


def _kept_tokens(source: Place, size: int, start: int, end: int, step: int) -> Place | None:
    """The tokens [start, end) of ``size`` still hold every cell: the prefix left, or None."""
    cells = source.prefix
    if step != 1 or start > cells or end < size:
        return None
    return replace(source, prefix=cells - start)


def _split(
    index: GraphIndex,
    node: onnx.NodeProto,
    source: Place,
    before: Sequence[Dim],
    wanted: str,
) -> Place | None:
    """The place of the Split output ``wanted`` (the outputs' sizes give the parts)."""
    axis = _int_attr(node, "axis", 0) % max(1, len(before))
    if axis not in source.axes:
        return source if _kept(source, before, index.shape(wanted) or ()) else None
    size = before[axis]
    if not source.tokens or not isinstance(size, int):
        return None
    start = 0
    for out in node.output:
        shape = index.shape(out) if out else None
        part = shape[axis] if shape is not None and len(shape) == len(before) else None
        if not isinstance(part, int):
            return None
        if out == wanted:
            return _kept_tokens(source, size, start, start + part, 1)
        start += part
    return None


def _concatenated(
    index: GraphIndex, node: onnx.NodeProto, source: Place, name: str, shape: Sequence[Dim]
) -> Place | None:
    rank = len(shape)
    axis = _int_attr(node, "axis", 0) % max(1, rank)
    if axis not in source.axes:
        before = index.shape(name) or ()
        return source if _kept(source, before, shape) else None
    if not source.tokens:
        return None
    inputs = [n for n in node.input if n]
    at = inputs.index(name)
    if at != len(inputs) - 1:
        return None  # tokens after the cells: not a layout onnxcam reads
    added = 0
    for other in inputs[:at]:
        size = _tokens_in(index, other, axis, rank)
        if size is None:
            return None
        added += size
    return replace(source, prefix=source.prefix + added)


# Ops that give a learnt token to every image of the batch (torch's ``cls_token.expand(B, -1,
# -1)``): their output holds as many tokens as the parameter.
_PER_IMAGE_OPS = {"Expand", "Tile", "Cast", "Identity"}


def _tokens_in(index: GraphIndex, name: str, axis: int, rank: int) -> int | None:
    """How many tokens ``name`` puts before the cells on ``axis``: from its shape, or, where
    shape inference cannot tell (an Expand to a shape computed in the graph), from the learnt
    parameter it repeats for each image."""
    shape = index.shape(name)
    size = shape[axis] if shape is not None and len(shape) == rank else None
    if isinstance(size, int):
        return size
    while (i := index.producer.get(name)) is not None and index.nodes[i].op_type in _PER_IMAGE_OPS:
        name = index.nodes[i].input[0]
    init = index.initializers.get(name)
    if init is None or len(init.dims) != rank:
        return None
    return int(init.dims[axis])
