"""Where a detector's head begins, one map per scale, read from the graph's structure.

A detection head ends, per scale, in the last spatial maps before its anchors are flattened
(box and class convolutions, or their concatenation). It begins at the last map that *every*
path from the image to those ends passes through: the map's dominator. A map that only some
paths pass through is a branch (a class-logit convolution beside its box branch), however late
it comes; the shared neck output before the branches is the dominator. This holds whether the
branches are concatenated per scale as spatial maps (Ultralytics 8.2), kept apart (earlier
v8), a single prediction convolution (YOLOv5, PicoDet), or a one-to-one branch fed by a
detached copy (YOLOv10, YOLO26), and whatever computes the anchors (constants, or ``Shape``
of the maps).

The same dominators name the map to try instead of an explained one
(:func:`earlier_maps`): the last map before it with a weighted layer in between.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import NodeError
from .index import Candidate, Dim, GraphIndex, spatial_candidates

__all__ = ["earlier_maps", "head_ends", "head_starts"]

# Ops that only route a prediction conv's channels (PicoDet's box/class split).
_SPLITTING_OPS = ("Split", "Slice", "Identity", "Transpose", "Reshape")
# Layers with weights: a map one of them lies before is "earlier" (a different layer).
_WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "ConvInteger"}


def _reached_without(index: GraphIndex, cut: str) -> set[str]:
    """Every tensor computed from the image input when ``cut`` is taken out of the graph."""
    reached = set(index.inputs[:1]) - {cut}
    for node in index.nodes:  # graph order is topological
        if any(name in reached for name in node.input):
            reached.update(name for name in node.output if name and name != cut)
    return reached


def dominates(index: GraphIndex, tensor: str, ends: Iterable[str]) -> bool:
    """True when every path from the image input to each of ``ends`` passes through
    ``tensor``."""
    reached = _reached_without(index, tensor)
    return not any(end in reached for end in ends)


def head_ends(index: GraphIndex, outputs: Sequence[str]) -> list[Candidate]:
    """The spatial maps upstream of ``outputs`` that feed no other spatial map: the last box
    and class maps of each scale (a prediction convolution whose channels are then split, as
    PicoDet's, counts as one), in graph order.

    Raises:
        NodeError: no spatial map leads to the outputs.
    """
    upstream = set().union(*(index.ancestors(name) for name in outputs))
    candidates = [c for c in spatial_candidates(index.model, index) if c.index in upstream]
    if not candidates:
        raise NodeError("no spatial feature map leads to the detection outputs")
    above = set().union(*(index.ancestors(c.tensor) for c in candidates))
    fed = {name for i in above for name in index.nodes[i].input}
    by_tensor = {c.tensor: c for c in candidates}
    ends = []
    for end in (c for c in candidates if c.tensor not in fed):
        while True:  # back through a split of one prediction conv into box and class parts
            node = index.nodes[end.index]
            source = by_tensor.get(node.input[0]) if node.input else None
            if node.op_type not in _SPLITTING_OPS or source is None:
                break
            end = source
        ends.append(end)
    return sorted({e.tensor: e for e in ends}.values(), key=lambda c: c.index)


def head_starts(index: GraphIndex, outputs: Sequence[str]) -> list[Candidate]:
    """Per scale (the ends' grid), the last map of that grid that dominates every end of the
    scale, other than the ends themselves; a scale with no such map keeps its last end. Finest
    scale first.

    Raises:
        NodeError: no spatial map leads to the outputs.
    """
    ends = head_ends(index, outputs)
    candidates = spatial_candidates(index.model, index)
    scales: dict[tuple[Dim, Dim], list[Candidate]] = {}
    for end in ends:
        scales.setdefault(end.spatial, []).append(end)
    picked = []
    for grid, group in scales.items():
        tensors = [e.tensor for e in group]
        above = set().union(*(index.ancestors(t) for t in tensors))
        shared = [c for c in candidates if c.spatial == grid and c.index in above]
        shared = [c for c in shared if c.tensor not in tensors]
        start = next((c for c in reversed(shared) if dominates(index, c.tensor, tensors)), None)
        picked.append(start or group[-1])

    def area(c: Candidate) -> int:
        h, w = c.spatial
        return (h if isinstance(h, int) else 0) * (w if isinstance(w, int) else 0)

    return sorted(picked, key=area, reverse=True)


def earlier_maps(index: GraphIndex, maps: Sequence[Candidate]) -> tuple[Candidate, ...]:
    """For each map, the last map before it that every path to it passes through with a
    weighted layer (a convolution) in between: the same features one layer earlier. Maps
    without one are left out; the result has no duplicates."""
    candidates = spatial_candidates(index.model, index)
    found: dict[str, Candidate] = {}
    for cand in maps:
        above = index.ancestors(cand.tensor)
        for prior in reversed([c for c in candidates if c.index in above]):
            between = above - index.ancestors(prior.tensor)
            if not any(index.nodes[i].op_type in _WEIGHTED_OPS for i in between):
                continue
            if dominates(index, prior.tensor, [cand.tensor]):
                found.setdefault(prior.tensor, prior)
                break
    return tuple(found.values())
