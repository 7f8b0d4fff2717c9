"""Transformer heads read from the graph: where a head takes the class token out of a token
map, and which map the last attention reads (what ``--node auto`` picks for such a head)."""

from __future__ import annotations

import numpy as np
import onnx

from ..layouts import TokenLayout
from .index import Candidate, GraphIndex, spatial_candidates

__all__ = ["attention_input", "backbone", "block_input", "takes_prefix"]

# Ops between the attention scores' MatMul and their Softmax: a scale, a mask, a bias.
_SCORE_OPS = {"Mul", "Div", "Add", "Sub", "Where", "Cast", "Identity"}
# Fused attention: the ONNX opset-23 op and ONNX Runtime's contrib ops.
_ATTENTION_OPS = {"Attention", "MultiHeadAttention"}


def takes_prefix(index: GraphIndex, node: onnx.NodeProto) -> Candidate | None:
    """The token map whose prefix tokens alone ``node`` takes out (a Gather or Slice of the
    class token: the head of a ViT), else None."""
    if node.op_type not in ("Gather", "Slice") or not node.input:
        return None
    cand = index.candidate(index.unalias(node.input[0]))
    if cand is None or not isinstance(cand.layout, TokenLayout) or not cand.layout.prefix:
        return None
    axis, prefix = cand.layout.spatial_axes[0], cand.layout.prefix
    if node.op_type == "Gather":
        given = next((a.i for a in node.attribute if a.name == "axis"), 0)
        taken = index.constant(node.input[1]) if len(node.input) > 1 else None
        if given % 3 != axis or taken is None:
            return None
        picked = np.asarray(taken).reshape(-1)
        return cand if picked.size and bool(np.all((picked >= 0) & (picked < prefix))) else None
    values = [index.constant(n) if n else None for n in node.input[1:4]]
    starts, ends = values[0], values[1]
    axes = values[2] if len(values) > 2 else None
    if starts is None or ends is None:
        return None
    axes_ = np.asarray(axes if axes is not None else np.arange(np.size(starts))).reshape(-1)
    for a, start, end in zip(axes_, np.reshape(starts, -1), np.reshape(ends, -1), strict=False):
        if int(a) % 3 == axis:
            return cand if int(start) >= 0 and 0 < int(end) <= prefix else None
    return None


def attention_input(index: GraphIndex, taken: Candidate) -> Candidate | None:
    """The token map that the last attention before ``taken`` reads: the latest map of
    ``taken``'s width that both its queries and its keys are computed from (a block's input
    after its normalisation, what pytorch-grad-cam's ViT recipe hooks as ``norm1``); None
    without an attention.

    After that attention the class token reads no other token, so the patch tokens of later
    maps change nothing that a class-token head sees.
    """
    tokens = [
        c
        for c in spatial_candidates(index.model, index)
        if isinstance(c.layout, TokenLayout) and c.channels == taken.channels
    ]
    for i in sorted(index.ancestors(taken.tensor), reverse=True):
        sides = _attention_sides(index, index.nodes[i])
        if not sides:
            continue
        shared = set.intersection(*(index.ancestors(side) for side in sides))
        found = [c for c in tokens if c.index in shared]
        if found:
            return max(found, key=lambda c: c.index)
    return None


def block_input(index: GraphIndex, norm: Candidate) -> Candidate | None:
    """The block's input that ``norm`` (an attention's input, :func:`attention_input`)
    normalises: the latest token map of its width upstream of it that also feeds the block's
    residual Add (an Add after ``norm``); None when there is none."""
    above = index.ancestors(norm.tensor)
    tokens = [
        c
        for c in spatial_candidates(index.model, index)
        if isinstance(c.layout, TokenLayout)
        and c.channels == norm.channels
        and c.index in above
        and c.tensor != norm.tensor
    ]
    for cand in sorted(tokens, key=lambda c: c.index, reverse=True):
        for j in index.consumers.get(cand.tensor, []):
            if index.nodes[j].op_type == "Add" and j not in above:
                return cand
    return None


def _attention_sides(index: GraphIndex, node: onnx.NodeProto) -> list[str]:
    """The queries' and keys' tensors of an attention (a Softmax over a MatMul of two tensors
    computed from the image, or a fused attention op), else []."""
    image = index.from_image
    if node.op_type in _ATTENTION_OPS:
        return [name for name in node.input[:2] if name in image]
    if node.op_type != "Softmax" or not node.input:
        return []
    tensor = node.input[0]
    while (i := index.producer.get(tensor)) is not None:
        producer = index.nodes[i]
        if producer.op_type in ("MatMul", "Einsum"):
            sides = [name for name in producer.input if name in image]
            return sides if len(sides) == 2 else []
        if producer.op_type not in _SCORE_OPS:
            return []
        data = [name for name in producer.input if name in image]
        if not data:
            return []
        tensor = data[0]
    return []


def backbone(index: GraphIndex, candidates: list[Candidate]) -> str:
    """What kind of backbone the maps come from, in words (for ``onnxcam nodes``)."""
    attends = any(_attention_sides(index, node) for node in index.nodes)
    tokens = [c.layout for c in candidates if isinstance(c.layout, TokenLayout)]
    prefixed = [t for t in tokens if t.prefix]
    if prefixed:
        last = prefixed[-1]
        h, w = last.hw
        return (
            f"a vision transformer: {h}×{w} patch tokens after {last.prefix} prefix token(s) "
            "(class, distillation or register tokens, read from the graph)"
        )
    if attends and (tokens or candidates):
        form = "token maps without prefix tokens" if tokens else "channels-last or grid maps"
        return f"a transformer with attention over a grid ({form}: Swin, Segformer and kin)"
    return "convolutional (feature maps on a grid)"
