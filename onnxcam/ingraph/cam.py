"""CAM in the graph, as :mod:`onnxcam.methods.cam`::

    s_c(i, j) = act(W A(:, i, j) + b)_c - act(b)_c        # W, b read from the graph
    L = ReLU(Up(s)) / max

For a head without an activation after the linear layer the bias cancels and ``s_c`` is
``W_c · A(:, i, j)``: only the targets' rows of ``W`` are multiplied (T·K·h·w multiply-adds
per image). A head ending in Softmax or Sigmoid scores every class (N·K·h·w), as onnxcam does.
"""

from __future__ import annotations

import numpy as np

from .. import graph, ops
from ..errors import ConfigError
from .base import Cells, Site

__all__ = ["build", "linear_output"]


def linear_output(site: Site) -> graph.LinearOutput:
    """The class output's weights, read from the head after the node.

    Raises:
        ConfigError: the head is not global average pooling and a linear layer (what was
            found instead).
    """
    assert site.output is not None and site.classes is not None
    name = site.node.tensor
    try:
        head = graph.split_head(site.source, [name], site.index, outputs=[site.output.name])
    except Exception as exc:  # NodeError, or a graph the split cannot read
        raise ConfigError(f"method 'cam' cannot split the head after '{name}': {exc}") from None
    linear = graph.linear_head(head, layout=site.node.layout, channels=site.node.channels)
    if site.output.name not in linear.outputs:
        raise ConfigError(f"method 'cam' cannot read weights: {linear.missing[site.output.name]}")
    return linear.outputs[site.output.name]


def build(site: Site) -> Cells:
    b, classes = site.b, site.classes
    assert classes is not None
    head = linear_output(site)
    rows = site.rows()  # (B, K, hw)
    weight = head.weight.astype(np.float32)
    if head.activation is None:
        if classes.chosen is not None:
            picked = b.op("Gather", [b.const(weight, "cam_w"), classes.chosen], axis=0)
            scores = b.op("MatMul", [picked, rows])  # (B, T, K) x (B, K, hw)
        else:
            if classes.fixed is not None:
                weight = weight[list(classes.fixed)]
            scores = b.op("MatMul", [b.const(weight, "cam_w"), rows])
        return Cells(site.as_maps(scores, classes.count), "peak")
    logits = b.op("MatMul", [b.const(weight, "cam_w"), rows])  # (B, N, hw)
    logits = b.op("Add", [logits, b.const(head.bias[:, None], "cam_b")])
    if head.activation == "softmax":
        probs = b.op("Softmax", [logits], axis=1)
        base = ops.softmax(head.bias[None])[0]
    else:
        probs = b.op("Sigmoid", [logits])
        base = ops.sigmoid(head.bias)
    scores = b.op("Sub", [probs, b.const(base[:, None], "cam_base")])
    return Cells(site.as_maps(classes.pick(b, scores, site.cells), classes.count), "peak")
