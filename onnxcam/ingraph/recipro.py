"""Recipro-CAM in the graph, as :mod:`onnxcam.methods.recipro`::

    s(i, j) = f(head(A ⊙ 1_ij))                          # f: the target's probability
    L = Up(minmax(s))

The probabilities and their min-max are computed in float64 (h·w·N values per image), as
onnxcam computes them: in float32 the maps differed by up to 9e-6 on the shapes model, in
float64 by 1e-7. ONNX Runtime (CPU, CUDA) runs it; a runtime without DOUBLE (TensorRT) does not.

The feature map of each image is repeated h·w times, each copy keeping one cell (a one-hot
spatial mask), and a copy of the head after the node runs on that batch of B·h·w inside the
same graph; whatever else the head reads from before the node (a skip connection) is
repeated alongside. The head's weights are shared with the model, not copied. The target
scores of each copy, gathered and reshaped, are the map at feature resolution. The batch B
stays dynamic.
"""

from __future__ import annotations

import numpy as np
import onnx

from .. import graph
from ..errors import ConfigError
from ..layouts import TokenLayout
from ..methods.recipro import mosaic
from .base import Cells, Site

__all__ = ["build"]


def build(site: Site) -> Cells:
    b, node, classes, output = site.b, site.node, site.classes, site.output
    assert classes is not None and output is not None
    try:
        head = graph.split_head(site.source, [node.tensor], site.index, outputs=[output.name])
    except Exception as exc:  # NodeError, or a graph the split cannot read
        raise ConfigError(
            f"method 'recipro' cannot split the head after '{node.label}': {exc}"
        ) from None
    model = graph.make_batch_dynamic(head.model)[0]
    if any(a.HasField("g") or len(a.graphs) for n in model.graph.node for a in n.attribute):
        raise ConfigError(
            f"method 'recipro' cannot copy the head after '{node.label}': it holds If/Loop/Scan "
            "subgraphs"
        )
    h, w = site.grid
    cells = h * w
    # one mask per cell, (1, h·w, <the map's dims with one channel>) in the map's own layout
    masks = mosaic(h, w, np.arange(h), np.arange(w), site.kernel).reshape(cells, 1, h, w)
    # a token map's prefix tokens (the class token) are kept: their masks are ones
    layout = node.layout
    kept = None
    if isinstance(layout, TokenLayout):
        kept = np.ones((1, layout.prefix + cells, 1), np.float32)
    masks = node.layout.from_chw(masks, kept)[None]
    feeds: dict[str, str] = {}
    inputs = {v.name: v for v in model.graph.input}
    tensor = node.tensor
    expanded = b.op("Mul", [b.unsqueeze(tensor, [1]), b.const(masks, "recipro_masks")])
    feeds[head.feeds[tensor]] = _merged(site, expanded, len(masks.shape) - 1)
    for name in head.side:
        feeds[head.feeds[name]] = _repeated(site, name, cells)
    for feed, value in list(feeds.items()):
        want = inputs[feed].type.tensor_type.elem_type
        have = site.index.elem_type(tensor if feed == head.feeds[tensor] else _source(head, feed))
        if have is not None and want != have:
            feeds[feed] = b.op("Cast", [value], to=want)
    scores = _copy_head(site, model, feeds)[output.name]
    scores = b.reshape(scores, [-1, cells, output.classes])
    # float64 from the logits to the min-max, as onnxcam scores: a probability's changes
    # across cells can be near float32's resolution, which min-max then magnifies
    scores = b.op("Cast", [scores], to=onnx.TensorProto.DOUBLE)
    if output.activation is None:  # the probability, as onnxcam's class targets score it
        if output.classes == 1:
            scores = b.op("Sigmoid", [scores])
        else:
            scores = b.op("Softmax", [scores], axis=2)
    scores = b.op("Transpose", [scores], perm=[0, 2, 1])  # (B, N, hw)
    picked = site.as_maps(classes.pick(b, scores, cells), classes.count)
    scaled = b.op("Cast", [b.minmax(picked, np.float64)], to=onnx.TensorProto.FLOAT)
    return Cells(scaled, "scaled")


def _source(head: graph.Head, feed: str) -> str:
    return next(name for name, fed in head.feeds.items() if fed == feed)


def _merged(site: Site, value: str, rank: int) -> str:
    """(B, n, d1, ...) as (B·n, d1, ...), for a tensor of ``rank`` dims after (B, n)."""
    b = site.b
    shape = b.op("Shape", [value])
    rest = b.op("Slice", [shape, b.ints([2]), b.ints([2 + rank]), b.ints([0])])
    return b.op("Reshape", [value, b.op("Concat", [b.ints([-1]), rest], axis=0)])


def _repeated(site: Site, name: str, times: int) -> str:
    """Each image's value of ``name`` repeated ``times`` times along the batch, in order."""
    shape = site.index.shape(name)
    if shape is None:
        raise ConfigError(
            f"method 'recipro': the rank of '{name}', which the head reads, is unknown"
        )
    b, rank = site.b, len(shape)
    tiled = b.op("Expand", [b.unsqueeze(name, [1]), b.ints([1, times, *[1] * (rank - 1)])])
    return _merged(site, tiled, rank - 1)


def _copy_head(site: Site, model: onnx.ModelProto, feeds: dict[str, str]) -> dict[str, str]:
    """The head's nodes added to the graph under fresh names, its inputs taken from ``feeds``;
    returns what each head output is called in the graph. Weights that the model already has
    are shared; others (shape constants the head needed changed) are added."""
    b = site.b
    own = {init.name for init in b.graph.initializer}
    renamed = dict(feeds)
    for init in model.graph.initializer:
        if init.name not in own:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = renamed[init.name] = b.fresh("head_const")
            b.graph.initializer.append(copy)
    for node in model.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.input[:], copy.output[:]
        copy.input.extend(renamed.get(name, name) for name in node.input)
        for name in node.output:
            if name:
                renamed[name] = b.fresh("head")
        copy.output.extend(renamed.get(name, "") for name in node.output)
        copy.name = b.fresh("head_node")
        b.graph.node.append(copy)
    return {o.name: renamed.get(o.name, o.name) for o in model.graph.output}
