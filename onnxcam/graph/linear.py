"""Linear heads: the weights of a global-average-pooling + linear head, read from the graph,
and the head run from them in numpy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ..errors import ConfigError
from ..layouts import NCHW, FeatureLayout, feature_layout
from ..ops import sigmoid, softmax
from .head import Head
from .index import Dim, GraphIndex, _dims

_POOL_ALIASES = {"Identity", "Dropout", "Cast"}
_VECTOR_OPS = {"Flatten", "Reshape", "Squeeze", "Identity", "Dropout"}
_AFTER_LINEAR = {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
_ACTIVATIONS = {"Softmax": "softmax", "Sigmoid": "sigmoid"}


@dataclass(frozen=True)
class LinearOutput:
    """One output of a global-average-pooling + linear head: ``act(W p + b)`` of the pooled
    vector ``p`` (K,), reshaped to ``shape`` after the batch."""

    weight: np.ndarray  # (N, K)
    bias: np.ndarray  # (N,)
    activation: str | None  # "softmax", "sigmoid" or None
    shape: tuple[int, ...]
    path: str  # the nodes from the pooling to the output, for the record


@dataclass(frozen=True)
class LinearHead:
    """The outputs that a head computes from the pooled feature map by one linear layer (or
    none), read from the graph; ``missing`` says, for every other output, what was found."""

    outputs: dict[str, LinearOutput]
    missing: dict[str, str]

    def run(
        self,
        feed: np.ndarray | Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        time_limit: float | None = None,
    ) -> dict[str, np.ndarray]:
        """The outputs for rows of pooled vectors (n, K): what the model outputs when its
        feature map holds the same vector in every cell (runs like a session, in numpy).

        Raises:
            ConfigError: an output asked for that is not linear in the pooled vector.
        """
        rows = feed if isinstance(feed, np.ndarray) else next(iter(feed.values()))
        rows = rows.astype(np.float64, copy=False)
        out = {}
        for name in outputs or list(self.outputs):
            if name not in self.outputs:
                raise ConfigError(self.missing.get(name, f"the head has no output '{name}'"))
            head = self.outputs[name]
            values = rows @ head.weight.T + head.bias
            if head.activation == "softmax":
                values = softmax(values)
            elif head.activation == "sigmoid":
                values = sigmoid(values)
            out[name] = values.astype(np.float32).reshape(len(rows), *head.shape)
        return out


class _NotLinear(Exception):
    pass


def linear_head(
    head: Head, *, layout: FeatureLayout | str = NCHW, channels: Dim = None
) -> LinearHead:
    """Read the weights of every output that ``head`` computes as ``act(W · GAP(A) + b)`` from
    its one cut ``A``: global average pooling (GlobalAveragePool, or ReduceMean over the
    spatial axes of ``layout``), then Flatten/Reshape/Squeeze, then a Gemm or a MatMul (+ Add)
    or no linear layer at all, then optionally Softmax or Sigmoid and shape-only ops.

    Raises:
        ConfigError: ``head`` has several cuts.
    """
    if len(head.cuts) != 1:
        raise ConfigError("a linear head is read for one node; several were given")
    layout = feature_layout(layout)
    graph = head.model.graph
    index = GraphIndex(head.model, weights=True)
    producer = {name: node for node in graph.node for name in node.output if name}
    start = head.feeds[head.cuts[0]]

    def constant(name: str) -> np.ndarray | None:
        value = index.constant(name)  # through Identity and Cast, which the index folds
        return None if value is None else value.astype(np.float64)

    def named(node: onnx.NodeProto) -> str:
        return f"{node.op_type} '{node.name}'" if node.name else node.op_type

    def attr(node: onnx.NodeProto, key: str, default: Any) -> Any:
        found = next((a for a in node.attribute if a.name == key), None)
        return default if found is None else onnx.helper.get_attribute_value(found)

    def read(output: str) -> LinearOutput:
        chain: list[str] = []
        name = output

        def step(node: onnx.NodeProto, data: str) -> str:
            chain.append(named(node))
            return data

        def fail(why: str) -> _NotLinear:
            found = " ← ".join([f"'{output}'", *chain]) if chain else f"'{output}'"
            return _NotLinear(f"{why}; found {found}")

        activation = None
        while (node := producer.get(name)) is not None and (
            node.op_type in _AFTER_LINEAR or node.op_type in _ACTIVATIONS
        ):
            if node.op_type in _ACTIVATIONS:
                if activation is not None:
                    raise fail("two activations after the linear layer")
                axis = attr(node, "axis", -1)
                if node.op_type == "Softmax" and axis not in (1, -1):
                    raise fail(f"a Softmax along axis {axis}, not the classes")
                activation = _ACTIVATIONS[node.op_type]
            name = step(node, node.input[0])
        weight = bias = None
        node = producer.get(name)
        if node is not None and node.op_type == "Add":
            values = [constant(n) for n in node.input]
            data = [n for n, v in zip(node.input, values, strict=True) if v is None]
            known = [v for v in values if v is not None]
            if len(data) != 1 or len(known) != 1:
                raise fail(f"{named(node)} adds two computed tensors")
            bias, name = known[0].reshape(-1), step(node, data[0])
            node = producer.get(name)
        if node is not None and node.op_type == "Gemm":
            matrix = constant(node.input[1])
            if matrix is None or attr(node, "transA", 0):
                raise fail(f"{named(node)} does not multiply the pooled vector by weights")
            matrix = matrix * attr(node, "alpha", 1.0)
            weight = matrix if attr(node, "transB", 0) else matrix.T
            if len(node.input) > 2 and node.input[2]:
                c = constant(node.input[2])
                if c is None:
                    raise fail(f"{named(node)} adds a computed tensor")
                c = np.broadcast_to(c * attr(node, "beta", 1.0), (weight.shape[0],))
                bias = c if bias is None else bias + c
            name = step(node, node.input[0])
        elif node is not None and node.op_type == "MatMul":
            matrix = constant(node.input[1])
            if matrix is None or matrix.ndim != 2:
                raise fail(f"{named(node)} does not multiply the pooled vector by weights")
            weight, name = matrix.T, step(node, node.input[0])
        elif bias is not None:
            raise fail("a bias without a linear layer before it")
        while (node := producer.get(name)) is not None and node.op_type in _VECTOR_OPS:
            name = step(node, node.input[0])
        if node is None:
            raise fail("no global average pooling of the node's map")
        pooled = node.op_type == "GlobalAveragePool"
        if node.op_type == "ReduceMean":
            axes = index.reduce_axes(node)
            pooled = axes is not None and {a % layout.rank for a in axes} == set(
                layout.spatial_axes
            )
        if not pooled:
            raise fail(f"{named(node)} is not a global average pooling")
        name = step(node, node.input[0])
        while (node := producer.get(name)) is not None and node.op_type in _POOL_ALIASES:
            name = step(node, node.input[0])
        if name != start:
            raise fail("the pooling does not read the node's map")
        k = channels if isinstance(channels, int) else _channels(head, layout)
        if weight is None:
            weight = np.eye(k)
        if weight.shape[1] != k:
            raise fail(f"a linear layer of {weight.shape[1]} inputs for {k} channels")
        if bias is None:
            bias = np.zeros(weight.shape[0])
        shape = _shape_after_batch(head.model, output) or (weight.shape[0],)
        if int(np.prod(shape)) != weight.shape[0]:
            shape = (weight.shape[0],)
        return LinearOutput(weight, bias, activation, shape, " → ".join(reversed(chain)))

    outputs: dict[str, LinearOutput] = {}
    missing: dict[str, str] = {}
    for out in graph.output:
        try:
            outputs[out.name] = read(out.name)
        except _NotLinear as exc:
            missing[out.name] = (
                f"output '{out.name}' is not global average pooling and a linear layer of "
                f"node '{head.cuts[0]}' (what CAM needs): {exc}"
            )
    return LinearHead(outputs, missing)


def _channels(head: Head, layout: FeatureLayout) -> int:
    value = next(v for v in head.model.graph.input if v.name == head.feeds[head.cuts[0]])
    dims = value.type.tensor_type.shape.dim
    position = layout.channel_axis
    if len(dims) != layout.rank or not dims[position].HasField("dim_value"):
        raise ConfigError(f"the number of channels of '{head.cuts[0]}' is not known")
    return int(dims[position].dim_value)


def _shape_after_batch(model: onnx.ModelProto, output: str) -> tuple[int, ...] | None:
    value = next((v for v in model.graph.output if v.name == output), None)
    if value is None:
        return None
    dims = _dims(value)
    if dims is None or len(dims) < 2 or not all(isinstance(d, int) for d in dims[1:]):
        return None
    return tuple(int(d) for d in dims[1:])  # type: ignore[arg-type]
