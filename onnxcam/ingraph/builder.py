"""Adding nodes to a copy of a model: unique names, constants, opset-aware reductions, and the
steps every exported map shares (the classes picked, the map finished, the upsampling)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import ops

__all__ = ["FINISHES", "PREFIX", "Builder", "Classes", "all_names", "opset_of"]

#: Every tensor, node and initializer that export adds is named under this prefix.
PREFIX = "onnxcam_export/"

#: How cell scores ``S`` (B, T, h, w) become the map, as each method defines it:
#: ``peak`` ``ReLU(Up(S)) / max`` (CAM, Eigen-CAM), ``minmax_first`` ``Up(minmax(S))``
#: (Recipro-CAM), ``minmax_last`` ``minmax(Up(S))`` (the activation map), ``scaled``
#: ``Up(S)`` (S already in [0, 1]).
FINISHES = ("peak", "minmax_first", "minmax_last", "scaled")


def opset_of(model: onnx.ModelProto) -> int:
    """The version of the default (``ai.onnx``) operator set the model imports."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def all_names(graph: onnx.GraphProto) -> set[str]:
    """Every name a graph and its subgraphs use: tensors, nodes, initializers, value infos."""
    names = {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    names |= {i.name for i in graph.initializer}
    names |= {s.values.name for s in graph.sparse_initializer}
    for node in graph.node:
        names.add(node.name)
        names.update(node.input)
        names.update(node.output)
        for attr in node.attribute:
            for sub in [*attr.graphs, *([attr.g] if attr.HasField("g") else [])]:
                names |= all_names(sub)
    names.discard("")
    return names


class Builder:
    """Appends nodes and initializers to ``model`` (a copy the caller owns), each under a
    fresh name that the model does not use.

    Args:
        model: the model to add to; changed in place.
        opset: the default domain's version the added nodes are written for.
    """

    def __init__(self, model: onnx.ModelProto, opset: int) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = opset
        self._taken = all_names(model.graph)
        self._count = 0

    def fresh(self, hint: str) -> str:
        """A name under :data:`PREFIX` that nothing in the model uses yet."""
        while True:
            self._count += 1
            name = f"{PREFIX}{hint}_{self._count}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def const(self, value: Any, hint: str, dtype: Any = np.float32) -> str:
        """An initializer holding ``value`` as ``dtype``."""
        name = self.fresh(hint)
        array = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values: Iterable[int], hint: str = "shape") -> str:
        return self.const(list(values), hint, np.int64)

    def op(self, op_type: str, inputs: Sequence[str], hint: str = "", **attrs: Any) -> str:
        """One node of one output; returns the output's name."""
        return self.op_n(op_type, inputs, 1, hint, **attrs)[0]

    def op_n(
        self, op_type: str, inputs: Sequence[str], n: int, hint: str = "", **attrs: Any
    ) -> list[str]:
        """One node of ``n`` outputs; returns their names."""
        hint = hint or op_type.lower()
        outputs = [self.fresh(hint) for _ in range(n)]
        node = helper.make_node(op_type, list(inputs), outputs, name=self.fresh(op_type), **attrs)
        self.graph.node.append(node)
        return outputs

    def named(self, op_type: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        """One node whose output has the name given (a graph output's)."""
        node = helper.make_node(op_type, list(inputs), [output], name=self.fresh(op_type), **attrs)
        self.graph.node.append(node)
        return output

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: int = 1) -> str:
        """ReduceMean/Max/Min/L2/Sum over ``axes``: axes an input from opset 18 (ReduceSum:
        13), before that an attribute."""
        if self.opset >= 18 or (op_type == "ReduceSum" and self.opset >= 13):
            return self.op(op_type, [x, self.ints(axes, "axes")], keepdims=keepdims)
        return self.op(op_type, [x], axes=list(axes), keepdims=keepdims)

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Unsqueeze", [x, self.ints(axes, "axes")])

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.op("Reshape", [x, self.ints(shape)])

    # ---------------------------------------------------------------- the shared steps

    def minmax(self, x: str, dtype: Any = np.float32) -> str:
        """``(x - min) / (max - min)`` per (h, w) map (the last two axes) of ``dtype``; a
        constant map becomes zeros (:func:`onnxcam.ops.minmax`)."""
        lo = self.reduce("ReduceMin", x, [-2, -1])
        span = self.op("Sub", [self.reduce("ReduceMax", x, [-2, -1]), lo])
        zero = self.const(0.0, "zero", dtype)
        some = self.op("Greater", [span, zero])
        safe = self.op("Where", [some, span, self.const(1.0, "one", dtype)])
        scaled = self.op("Div", [self.op("Sub", [x, lo]), safe])
        return self.op("Where", [some, scaled, zero])

    def peak(self, x: str) -> str:
        """``ReLU(x) / max`` per map; an all-zero map stays zero, never NaN."""
        relu = self.op("Relu", [x])
        top = self.reduce("ReduceMax", relu, [-2, -1])
        zero = self.const(0.0, "zero")
        safe = self.op("Where", [self.op("Greater", [top, zero]), top, self.const(1.0, "one")])
        return self.op("Div", [relu, safe])

    def upsample(self, x: str, grid: tuple[int, int], size: tuple[int, int]) -> str:
        """Bilinear resize with half-pixel centres of (..., h, w) maps to ``size``: the same
        two matrix products with the same matrices as :func:`onnxcam.ops.upsample`."""
        rows = self.const(ops.interp_matrix(grid[0], size[0]), "up_rows")
        cols = self.const(ops.interp_matrix(grid[1], size[1]).T, "up_cols")
        return self.op("MatMul", [self.op("MatMul", [rows, x]), cols])

    def finish(
        self, cells: str, rule: str, grid: tuple[int, int], size: tuple[int, int] | None
    ) -> str:
        """The map of cell scores (B, T, h, w) by ``rule`` (:data:`FINISHES`), upsampled to
        ``size`` when one is given."""

        def up(x: str) -> str:
            return x if size is None else self.upsample(x, grid, size)

        if rule == "peak":
            return self.peak(up(cells))
        if rule == "minmax_first":
            return up(self.minmax(cells))
        if rule == "scaled":
            return up(cells)
        return self.minmax(up(cells))


@dataclass(frozen=True)
class Classes:
    """The classes a class-specific map is made for.

    Attributes:
        rule: the target rule as given (``top``, ``top:3``, ``class=1,4``, ``all``).
        count: T, the number of targets per image.
        chosen: the (B, T) int64 tensor of classes picked per image (``top``), else None.
        fixed: the classes named (``class=``), else None; ``all``: both None.
    """

    rule: str
    count: int
    chosen: str | None = None
    fixed: tuple[int, ...] | None = None

    def pick(self, b: Builder, scores: str, cells: int) -> str:
        """Each target's rows of per-class scores (B, N, cells): (B, T, cells)."""
        if self.chosen is not None:
            where = b.unsqueeze(self.chosen, [2])
            where = b.op("Expand", [where, b.ints([1, 1, cells])])
            return b.op("GatherElements", [scores, where], axis=1)
        if self.fixed is not None:
            return b.op("Gather", [scores, b.ints(self.fixed, "classes")], axis=1)
        return scores
