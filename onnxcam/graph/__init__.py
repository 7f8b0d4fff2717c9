"""Pure graph surgery on ``onnx.ModelProto``: find feature maps, expose one, free the batch.

Every function that changes a model works on a copy (``ModelProto().CopyFrom``); the
caller's proto and file are never modified. One job a module:

- ``load``: read and check a model from a path or bytes (:func:`load_model`);
- ``index``: the lookup tables over one graph (:class:`GraphIndex`) and the spatial maps
  found with them (:class:`Candidate`, :func:`spatial_candidates`);
- ``choose``: ``--node auto`` (a classifier's head, a detector's scales) and name resolution;
- ``detector_heads``: where each scale of a detector's head begins, and the maps one layer
  before a chosen one (dominators: the maps every path to another passes through);
- ``rewrite``: expose a tensor, free the batch, set the input size, convert to float16;
- ``head``: the model after the explained maps, as a model of its own (:func:`split_head`);
- ``linear``: the weights of a global-average-pooling + linear head (:func:`linear_head`).
"""

from .choose import (
    AutoChoice,
    auto_candidate,
    auto_choice,
    block_cut,
    detector_choice,
    resolve_node,
    resolve_nodes,
)
from .detector_heads import earlier_maps
from .head import Head, split_head
from .index import Candidate, Dim, GraphIndex, fmt_shape, spatial_candidates, transpose_perm
from .index import _dims as _dims
from .linear import LinearHead, LinearOutput, linear_head
from .load import load_model
from .rewrite import (
    batch_first,
    drop_unused_inputs,
    expose,
    expose_float32,
    make_batch_dynamic,
    to_float16,
    with_input_size,
)
from .tokens import backbone

__all__ = [
    "AutoChoice",
    "Candidate",
    "Dim",
    "GraphIndex",
    "Head",
    "LinearHead",
    "LinearOutput",
    "auto_candidate",
    "auto_choice",
    "backbone",
    "batch_first",
    "block_cut",
    "detector_choice",
    "drop_unused_inputs",
    "earlier_maps",
    "expose",
    "expose_float32",
    "fmt_shape",
    "linear_head",
    "load_model",
    "make_batch_dynamic",
    "resolve_node",
    "resolve_nodes",
    "spatial_candidates",
    "split_head",
    "to_float16",
    "transpose_perm",
    "with_input_size",
]
