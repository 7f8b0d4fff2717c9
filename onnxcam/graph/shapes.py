"""Sizes that shape inference leaves unknown, computed for one image.

Exporters that trace shapes write them as small integer computations in the graph (``Shape``,
``Gather``, ``Mod``, ``Concat``... into a ``Pad`` or a ``Reshape``: Swin's patch merging, a class
token expanded to the batch). ONNX's shape inference follows only some of those ops, and every
size after the first it cannot follow is unknown. For a graph with fixed input sizes,
:func:`with_sizes_folded` computes those integer tensors in numpy, writes them into a copy as
constants, and infers shapes again, until nothing more becomes known.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["with_sizes_folded"]

_ROUNDS = 16  # each round follows the sizes through one more op inference could not
_LIMIT = 4096  # elements: shape computations are small


def _ints(attr: str, node: onnx.NodeProto) -> list[int] | None:
    for a in node.attribute:
        if a.name == attr:
            return list(a.ints) if a.ints else [int(a.i)]
    return None


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _slice(node: onnx.NodeProto, x: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    starts, ends = rest[0], rest[1]
    axes = rest[2] if len(rest) > 2 else np.arange(len(starts))
    steps = rest[3] if len(rest) > 3 else np.ones(len(starts), np.int64)
    index = [slice(None)] * x.ndim
    for a, s, e, t in zip(axes, starts, ends, steps, strict=False):
        index[int(a)] = slice(int(s), int(e), int(t))
    return x[tuple(index)]


def _reshape(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    dims = [x.shape[i] if d == 0 else int(d) for i, d in enumerate(shape)]
    return x.reshape(dims)


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)
    return a / b


_Op = Callable[..., np.ndarray]
_OPS: dict[str, _Op] = {
    "Gather": lambda n, x, i: np.asarray(np.take(x, i, axis=_attr(n, "axis", 0))),
    "Unsqueeze": lambda n, x, *a: np.expand_dims(
        x, tuple(int(v) for v in (a[0] if a else _ints("axes", n) or []))
    ),
    "Squeeze": lambda n, x, *a: np.squeeze(
        x, tuple(int(v) for v in (a[0] if a else _ints("axes", n) or [])) or None
    ),
    "Concat": lambda n, *xs: np.concatenate(xs, axis=_attr(n, "axis", 0)),
    "Slice": _slice,
    "Cast": lambda n, x: x.astype(onnx.helper.tensor_dtype_to_np_dtype(_attr(n, "to", 1))),
    "Add": lambda n, a, b: a + b,
    "Sub": lambda n, a, b: a - b,
    "Mul": lambda n, a, b: a * b,
    "Div": lambda n, a, b: _int_div(a, b),
    "Mod": lambda n, a, b: np.fmod(a, b) if _attr(n, "fmod", 0) else np.mod(a, b),
    "Neg": lambda n, a: -a,
    "Abs": lambda n, a: np.abs(a),
    "Floor": lambda n, a: np.floor(a),
    "Ceil": lambda n, a: np.ceil(a),
    "Max": lambda n, *xs: np.maximum.reduce(xs),
    "Min": lambda n, *xs: np.minimum.reduce(xs),
    "Equal": lambda n, a, b: np.equal(a, b),
    "Less": lambda n, a, b: np.less(a, b),
    "Greater": lambda n, a, b: np.greater(a, b),
    "Not": lambda n, a: np.logical_not(a),
    "Where": lambda n, c, a, b: np.asarray(np.where(c, a, b)),
    "Identity": lambda n, a: a,
    "Reshape": lambda n, x, s: _reshape(x, s),
    "Transpose": lambda n, x: np.transpose(x, _ints("perm", n)),
    "Range": lambda n, s, e, d: np.arange(s, e, d),
    "ConstantOfShape": lambda n, s: np.full(
        [int(v) for v in s],
        next(
            (numpy_helper.to_array(a.t).reshape(-1)[0] for a in n.attribute if a.name == "value"),
            0.0,
        ),
    ),
}


def with_sizes_folded(
    model: onnx.ModelProto, infer: Callable[[onnx.ModelProto], onnx.ModelProto]
) -> onnx.ModelProto:
    """``infer(model)`` with the integer tensors computed from known shapes folded into
    constants (see the module docstring); ``model`` is not changed."""
    inferred = infer(model)
    for _ in range(_ROUNDS):
        folded = _fold(inferred)
        if folded is None:
            break
        inferred = infer(folded)
    return inferred


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    graph = model.graph
    known: dict[str, tuple[int, ...]] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        t = value.type.tensor_type
        if t.HasField("shape") and all(
            d.HasField("dim_value") and d.dim_value > 0 for d in t.shape.dim
        ):
            known[value.name] = tuple(int(d.dim_value) for d in t.shape.dim)
    for init in graph.initializer:
        known[init.name] = tuple(int(d) for d in init.dims)
    return known


def _fold(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy with every computable small integer tensor a Constant, or None when no tensor
    became known."""
    shapes = _shapes(model)
    values: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if int(np.prod(init.dims)) <= _LIMIT and (init.raw_data or _has_data(init)):
            values[init.name] = numpy_helper.to_array(init)
    computed: dict[int, list[np.ndarray]] = {}
    for k, node in enumerate(model.graph.node):
        out = _computed(node, values, shapes)
        if out is None:
            continue
        for name, value in zip(node.output, out, strict=False):
            values[name] = value
        if node.op_type != "Constant":
            computed[k] = out
    if not computed:
        return None
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    for k, out in computed.items():
        node = folded.graph.node[k]
        const = onnx.helper.make_node(
            "Constant",
            [],
            [node.output[0]],
            name=node.name,
            value=numpy_helper.from_array(np.asarray(out[0]), node.output[0]),
        )
        node.CopyFrom(const)
    return folded


def _has_data(init: onnx.TensorProto) -> bool:
    return bool(init.int64_data or init.int32_data or init.float_data or init.double_data)


def _computed(
    node: onnx.NodeProto, values: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]
) -> list[np.ndarray] | None:
    if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    if node.op_type == "Constant":
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if value is not None and int(np.prod(value.dims)) <= _LIMIT:
            return [numpy_helper.to_array(value)]
        return None
    if node.op_type in ("Shape", "Size"):
        shape = shapes.get(node.input[0])
        if shape is None:
            return None
        if node.op_type == "Size":
            return [np.array(int(np.prod(shape)), np.int64)]
        start, end = _attr(node, "start", 0), _attr(node, "end", len(shape))
        return [np.array(shape[start:end], np.int64)]
    op = _OPS.get(node.op_type)
    given = [n for n in node.input if n]
    if op is None or not given or any(n not in values for n in given):
        return None
    try:
        out = np.asarray(op(node, *(values[n] for n in given)))
    except (ValueError, IndexError, TypeError, ZeroDivisionError, FloatingPointError):
        return None
    if out.size > _LIMIT or out.dtype.kind not in "iubf":
        return None
    return [out]
