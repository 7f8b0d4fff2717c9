"""Rewrites, each on a copy: expose a tensor as a graph output, free the batch dimension, set
the input size, drop unused inputs, convert to float16."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ConfigError, NodeError
from .head import BATCH_FIRST_SUFFIX
from .index import GraphIndex, _copy, _infer


def expose(
    model: onnx.ModelProto, tensor: str, index: GraphIndex | None = None, *, copy: bool = True
) -> onnx.ModelProto:
    """A copy of the model with ``tensor`` appended to the graph outputs.

    The appended ValueInfo carries the exact element type and the rank, with a symbolic
    batch dimension, so it stays valid when the batch dimension is freed later. With
    ``copy=False`` the model itself is changed and returned: only for a proto the caller owns
    (one it has just loaded), to spare a copy of the weights.
    """
    out = _copy(model) if copy else model
    if tensor in (o.name for o in out.graph.output):
        return out
    index = index or GraphIndex(model)
    if tensor not in index.producer:
        raise NodeError(f"no node produces tensor '{tensor}'")
    elem = index.elem_type(tensor)
    if elem is None:
        elem = index.elem_type(index.inputs[0]) or onnx.TensorProto.FLOAT
    shape = index.shape(tensor)
    dims: list[int | None] | None = None
    if shape is not None:
        dims = [None, *(d if isinstance(d, int) else None for d in shape[1:])]
    out.graph.output.append(onnx.helper.make_tensor_value_info(tensor, elem, dims))
    return out


def batch_first(
    model: onnx.ModelProto, tensor: str, *, copy: bool = True, output: bool = False
) -> tuple[onnx.ModelProto, str]:
    """A copy where a sequence-first ``(L, B, D)`` tensor's readers read it through a
    batch-first ``(B, L, D)`` copy of it, and that copy's name: the copy can be exposed and
    fed in batches along its first axis like any other map, and the head after it takes it.
    With ``copy=False`` the model itself is changed (a proto the caller owns); with
    ``output``, the copy is a graph output too (float, of rank 3)."""
    out = _copy(model) if copy else model
    graph = out.graph
    first, back = tensor + BATCH_FIRST_SUFFIX, f"{tensor}__onnxcam_sequence_first"
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == tensor:
                node.input[k] = back
    at = next(i for i, n in enumerate(graph.node) if tensor in n.output) + 1
    made = [
        onnx.helper.make_node("Transpose", [tensor], [first], perm=[1, 0, 2], name=first),
        onnx.helper.make_node("Transpose", [first], [back], perm=[1, 0, 2], name=back),
    ]
    for offset, node in enumerate(made):
        graph.node.insert(at + offset, node)
    if output:
        dims = [None, None, None]
        graph.output.append(onnx.helper.make_tensor_value_info(first, onnx.TensorProto.FLOAT, dims))
    return out, first


def expose_float32(model: onnx.ModelProto, tensor: str) -> tuple[onnx.ModelProto, str]:
    """A copy with ``tensor`` cast to float32 and appended as an output; returns its name.

    For float16 models: the map comes back as float32, and the tensor itself stays internal,
    so converters' rules for outputs never reach the nodes that consume it.
    """
    out = _copy(model)
    name = f"{tensor}__onnxcam_float32"
    out.graph.node.append(
        onnx.helper.make_node(
            "Cast", [tensor], [name], to=onnx.TensorProto.FLOAT, name="onnxcam/expose_cast"
        )
    )
    out.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return out, name


def drop_unused_inputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy without the graph inputs that no node reads (Keras 3's ONNX export leaves
    constants it folded as such inputs, and ONNX Runtime would still demand them), and
    their names."""
    used = {name for node in model.graph.node for name in node.input}
    used |= {name for node in model.graph.node for attr in node.attribute
             for g in [*attr.graphs, *([attr.g] if attr.HasField("g") else [])]
             for sub in g.node for name in sub.input}  # fmt: skip
    outputs = {o.name for o in model.graph.output}
    unused = [v.name for v in model.graph.input if v.name not in used and v.name not in outputs]
    if not unused:
        return model, []
    out = _copy(model)
    kept = [v for v in out.graph.input if v.name not in unused]
    del out.graph.input[:]
    out.graph.input.extend(kept)
    return out, unused


def with_input_size(
    model: onnx.ModelProto, name: str, dims: tuple[int, int, int, int]
) -> onnx.ModelProto:
    """A copy whose input ``name`` has the given (batch, ...) dims except the batch, which
    stays as it was; intermediate shapes are dropped so inference recomputes them."""
    out = _copy(model)
    for value in out.graph.input:
        if value.name != name:
            continue
        for position, dim in enumerate(value.type.tensor_type.shape.dim):
            if position > 0:
                dim.Clear()
                dim.dim_value = dims[position]
    del out.graph.value_info[:]
    return out


def make_batch_dynamic(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """A copy whose batch dimension is symbolic, and whether anything had to change.

    Fixed leading dims of inputs and outputs become ``batch``; stale ``value_info`` is
    dropped; Reshape shape constants that start with a literal batch ``1`` get ``0``
    (copy that dimension) when ``allowzero`` is 0 and the Reshape's data is computed from the
    image input (a constant, such as a bias reshaped to ``[1, C, 1, 1]``, has no batch to
    copy). The result is a hypothesis: callers must prove it numerically (a batch of two
    against two single runs) before using it.
    """
    out = _copy(model)
    graph = out.graph
    inits = {i.name for i in graph.initializer}
    changed = False
    for value in [*graph.input, *graph.output]:
        if value.name in inits or not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 0 and dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
            changed = True
    if not changed:
        return out, False
    del graph.value_info[:]
    index = GraphIndex(out)
    for k, node in enumerate(graph.node):
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        if any(a.name == "allowzero" and a.i == 1 for a in node.attribute):
            continue
        target = index.constant(node.input[1])
        if target is None or target.ndim != 1 or target.size < 2 or target[0] != 1:
            continue
        if node.input[0] not in index.from_image:
            continue  # e.g. a bias (C,) reshaped to [1, C, 1, 1]: it has no batch to copy
        fixed = target.copy()
        fixed[0] = 0
        name = f"{node.input[1]}__onnxcam_batch{k}"
        graph.initializer.append(numpy_helper.from_array(fixed.astype(np.int64), name))
        node.input[1] = name
    return out, True


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy whose graph inputs and outputs stay float32 (Cast nodes at the edges).

    Uses onnxconverter-common, an optional dependency (``pip install 'onnxcam[fp16]'``).

    Raises:
        ConfigError: onnxconverter-common is not installed.
    """
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise ConfigError("--fp16 needs onnxconverter-common: pip install 'onnxcam[fp16]'") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every weight rounded to float16's range
        # The converter retypes value_info entries, so every intermediate needs one.
        return float16.convert_float_to_float16(_infer(model), keep_io_types=True)
