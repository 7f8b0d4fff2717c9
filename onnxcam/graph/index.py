"""The graph index: lookup tables over one shape-inferred graph (:class:`GraphIndex`), built
once, and the spatial feature maps found with it (:class:`Candidate`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..layouts import NCHW, NHWC, FeatureLayout, TokenLayout
from .places import Place, find_places
from .shapes import with_sizes_folded

Dim = int | str | None


_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}
# Ops that rearrange, retype or rescale the image input without making features.
_INPUT_PREP_OPS = {
    "Transpose", "Cast", "Identity", "Mul", "Div", "Add", "Sub", "Reshape", "Pad", "Slice",
    "Resize", "Clip", "BatchNormalization",
}  # fmt: skip
# Ops that apply learnt weights: a map that reaches one is a feature map.
_WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "QLinearConv"}
# Ops whose output is their input under another name.
_ALIASES = {"Identity", "Dropout"}


@dataclass(frozen=True)
class Candidate:
    """A tensor that can be explained: a feature map on the image grid produced by a node
    (a 4-D grid, or a transformer's tokens: see :class:`~onnxcam.layouts.FeatureLayout`).

    Attributes:
        node: name of the producing node ("" when the exporter left it empty).
        op_type: the producing node's operator.
        tensor: name of the output tensor.
        shape: inferred shape, ints where known, symbols or None elsewhere.
        layout: what the feature map's axes mean (:class:`~onnxcam.layouts.FeatureLayout`).
        index: position of the producing node in the graph.
    """

    node: str
    op_type: str
    tensor: str
    shape: tuple[Dim, ...]
    layout: FeatureLayout
    index: int

    @property
    def label(self) -> str:
        """The node's name, or a stand-in when the exporter left it empty."""
        return self.node or f"<{self.op_type} #{self.index}>"

    @property
    def spatial(self) -> tuple[Dim, Dim]:
        """(h, w) of the map."""
        return self.layout.grid(self.shape)

    @property
    def channels(self) -> Dim:
        """Number of channels K."""
        return self.layout.channels(self.shape)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference on a copy; the model itself when inference is impossible."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        return model


_SKELETON_LIMIT = 4096  # elements: tensors larger than this are weights, not shapes or axes


def _elements(tensor: onnx.TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= int(dim)
    return count


def _stripped(tensor: onnx.TensorProto) -> onnx.TensorProto:
    out = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type)
    out.dims.extend(tensor.dims)
    return out


def _skeleton(model: onnx.ModelProto) -> tuple[onnx.ModelProto, set[str]]:
    """The model without the data of its large tensors (weights), and their names.

    Everything that reading the graph needs stays: nodes, shapes, types, and the values of
    small tensors (Reshape shapes, axes, scales). Reading a 2 GB model then costs kilobytes.
    """
    out = onnx.ModelProto(ir_version=model.ir_version)
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    source, graph = model.graph, out.graph
    graph.name = source.name
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    graph.sparse_initializer.extend(source.sparse_initializer)
    stripped: set[str] = set()
    for init in source.initializer:
        if _elements(init) <= _SKELETON_LIMIT:
            graph.initializer.append(init)
        else:
            graph.initializer.append(_stripped(init))
            stripped.add(init.name)
    for node in source.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type != "Constant" or value is None or _elements(value) <= _SKELETON_LIMIT:
            graph.node.append(node)
            continue
        light = onnx.helper.make_node("Constant", [], list(node.output), name=node.name)
        light.attribute.add().CopyFrom(onnx.helper.make_attribute("value", _stripped(value)))
        graph.node.append(light)
        stripped.update(node.output)
    return out, stripped


def _fold_constant_aliases(model: onnx.ModelProto, stripped: set[str]) -> onnx.ModelProto:
    """A copy where Identity and Cast nodes of constants (not ``stripped``) are Constant nodes.

    Shape inference cannot see through them (paddle2onnx writes ``Constant -> Identity``
    as the shape of every Reshape), and then loses every shape after the first one.
    """
    out = _copy(model)
    known = {init.name: init for init in out.graph.initializer if init.name not in stripped}
    for i, node in enumerate(out.graph.node):
        if node.op_type == "Constant" and node.output and node.output[0] not in stripped:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                known[node.output[0]] = value
        elif node.op_type in ("Identity", "Cast") and node.input and node.input[0] in known:
            array = numpy_helper.to_array(known[node.input[0]])
            if node.op_type == "Cast":
                to = next(a.i for a in node.attribute if a.name == "to")
                array = array.astype(onnx.helper.tensor_dtype_to_np_dtype(to))
            tensor = numpy_helper.from_array(array, node.output[0])
            folded = onnx.helper.make_node(
                "Constant", [], [node.output[0]], name=node.name, value=tensor
            )
            out.graph.node[i].CopyFrom(folded)
            known[node.output[0]] = tensor
    return out


def _dims(value: onnx.ValueInfoProto) -> tuple[Dim, ...] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims: list[Dim] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_value"):
            dims.append(None)  # old exporters write a dynamic dimension as -1 (or 0)
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


class GraphIndex:
    """Lookup tables over one (shape-inferred) graph, built once.

    Args:
        model: the model; it is read, never changed. The index holds a copy without the data
            of large tensors (``stripped``), on which shapes are inferred.
        weights: keep the data of every tensor, so that :meth:`constant` reads weights too
            (for a small model, such as a head).
    """

    def __init__(self, model: onnx.ModelProto, *, weights: bool = False) -> None:
        skeleton, self.stripped = (model, set()) if weights else _skeleton(model)
        self.model = _infer(_fold_constant_aliases(skeleton, self.stripped))
        graph = self.model.graph
        self.nodes = list(graph.node)
        self.initializers = {init.name: init for init in graph.initializer}
        self.values: dict[str, onnx.ValueInfoProto] = {}
        for value in [*graph.input, *graph.value_info, *graph.output]:
            self.values.setdefault(value.name, value)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = i
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(i)
        self.inputs = [v.name for v in graph.input if v.name not in self.initializers]
        self.outputs = [v.name for v in graph.output]
        self._from_image: set[str] | None = None
        self._input_copies: set[str] | None = None
        self._places: dict[str, Place] | None = None
        self._one: GraphIndex = self

    @property
    def from_image(self) -> set[str]:
        """Every tensor computed from the image input (the first graph input)."""
        if self._from_image is None:
            found = set(self.inputs[:1])
            for node in self.nodes:  # graph order is topological
                if any(name in found for name in node.input):
                    found.update(name for name in node.output if name)
            self._from_image = found
        return self._from_image

    @property
    def places(self) -> dict[str, Place]:
        """Where the image grid lies in every tensor that still lays features out on the
        image (:func:`~onnxcam.graph.places.find_places`): a detection head's anchors reshaped
        into ``(1, 4, 16, 8400)`` have none, however 4-D they look."""
        if self._places is None:
            self._one = self._one_image()
            self._places = find_places(self._one)
        return self._places

    def full_shape(self, tensor: str) -> tuple[Dim, ...] | None:
        """The tensor's shape, with the sizes that only a batch of one lets shape inference
        compute filled in (the batch axis as it is)."""
        shape = self.shape(tensor)
        if shape is None or all(isinstance(d, int) for d in shape) or not self.places:
            return shape
        one = self._one.shape(tensor) if self._one is not self else None
        if one is None or len(one) != len(shape):
            return shape
        first = self.shape(self.inputs[0]) if self.inputs else None
        batch = first[0] if first else None
        keep = [i for i, d in enumerate(shape) if batch is not None and d == batch] or [0]
        return tuple(d if isinstance(d, int) or i in keep else one[i] for i, d in enumerate(shape))

    def _one_image(self) -> GraphIndex:
        """This graph for a batch of one where its batch is symbolic, with the sizes that
        shape inference can then compute (:func:`~onnxcam.graph.shapes.with_sizes_folded`:
        a class token expanded to the batch, a pad computed from the shape)."""
        first = self.shape(self.inputs[0]) if self.inputs else None
        if not first:
            return self
        model = _copy(self.model)
        value = next(v for v in model.graph.input if v.name == self.inputs[0])
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 1
        del model.graph.value_info[:]
        one = GraphIndex(with_sizes_folded(model, _infer), weights=True)  # already stripped
        one.stripped = self.stripped
        return one

    @property
    def input_copies(self) -> set[str]:
        """The image input and what only rearranges, retypes or rescales it with constants
        (a Transpose to NCHW, a Cast, ``x * 1/255 - mean``): not feature maps."""
        if self._input_copies is None:
            found = set(self.inputs[:1])
            for node in self.nodes:
                if node.op_type not in _INPUT_PREP_OPS or not node.input:
                    continue
                data = [name for name in node.input if name in found]
                others = [n for n in node.input if n and n not in found]
                if data and all(self.constant(n) is not None for n in others):
                    found.update(name for name in node.output if name)
            self._input_copies = found
        return self._input_copies

    def shape(self, tensor: str) -> tuple[Dim, ...] | None:
        value = self.values.get(tensor)
        return _dims(value) if value is not None else None

    def elem_type(self, tensor: str) -> int | None:
        value = self.values.get(tensor)
        if value is None or not value.type.HasField("tensor_type"):
            return None
        return int(value.type.tensor_type.elem_type) or None

    def constant(self, tensor: str) -> np.ndarray | None:
        """The value of an initializer or Constant-node output (small ones: shapes, axes,
        scales; weights only in an index built with ``weights``), else None."""
        if tensor in self.stripped:
            return None
        if tensor in self.initializers:
            return numpy_helper.to_array(self.initializers[tensor])
        i = self.producer.get(tensor)
        if i is not None and self.nodes[i].op_type == "Constant":
            for attr in self.nodes[i].attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def ancestors(self, tensor: str) -> set[int]:
        """Indices of every node that the tensor depends on."""
        seen: set[int] = set()
        stack = [tensor]
        while stack:
            i = self.producer.get(stack.pop())
            if i is None or i in seen:
                continue
            seen.add(i)
            stack.extend(name for name in self.nodes[i].input if name)
        return seen

    def layout(self, tensor: str) -> FeatureLayout | None:
        """The layout of a feature map, from where its grid lies (None: not one onnxcam
        reads: a grid elsewhere than NCHW or NHWC, tokens not on the batch's side, a grid or
        prefix of unknown size)."""
        place = self.places.get(tensor)
        shape = self.full_shape(tensor)
        if place is None or shape is None:
            return None
        if not place.tokens:
            if len(shape) != 4:
                return None
            grids: dict[tuple[int, ...], FeatureLayout] = {(2, 3): NCHW, (1, 2): NHWC}
            return grids.get(place.axes)
        (h, w), axis = place.grid, place.axes[0]
        if len(shape) != 3 or axis not in (0, 1) or not (isinstance(h, int) and isinstance(w, int)):
            return None
        if isinstance(shape[axis], int) and shape[axis] != place.prefix + h * w:
            return None
        return TokenLayout((h, w), place.prefix, sequence_first=axis == 0)

    def reduce_axes(self, node: onnx.NodeProto) -> list[int] | None:
        for attr in node.attribute:
            if attr.name == "axes":
                return list(attr.ints)
        if len(node.input) > 1 and node.input[1]:
            value = self.constant(node.input[1])
            if value is not None:
                return [int(a) for a in value.reshape(-1)]
        return None

    def unalias(self, tensor: str) -> str:
        """The tensor that ``tensor`` is only another name for (through Identity, Dropout)."""
        while (i := self.producer.get(tensor)) is not None and self.nodes[i].op_type in _ALIASES:
            tensor = self.nodes[i].input[0]
        return tensor

    def feeds_weights(self, tensor: str) -> bool:
        """True when a Conv, Gemm or MatMul uses ``tensor`` (directly or downstream) while it
        is still laid out on the image grid: a feature map, not an output map only reshaped or
        activated on its way out."""
        seen = {tensor}
        stack = [tensor]
        while stack:
            current = stack.pop()
            for j in self.consumers.get(current, []):
                if self.nodes[j].op_type in _WEIGHTED_OPS and self.layout(current) is not None:
                    return True
                for name in self.nodes[j].output:
                    if name and name not in seen:
                        seen.add(name)
                        stack.append(name)
        return False

    def feeds_a_map(self, tensor: str) -> bool:
        """True when something computed from ``tensor`` is a spatial map again (a
        squeeze-and-excitation gate, not a head)."""
        seen = {tensor}
        stack = [tensor]
        while stack:
            for j in self.consumers.get(stack.pop(), []):
                for name in self.nodes[j].output:
                    if name and name not in seen:
                        if self.candidate(name) is not None:
                            return True
                        seen.add(name)
                        stack.append(name)
        return False

    def candidate(self, tensor: str) -> Candidate | None:
        """The tensor as a Candidate when it is a float feature map computed from the image
        (not a weight, a constant or a rearranged copy of the input) in a layout onnxcam reads
        (:meth:`layout`), with a grid of h, w > 1, and its batch where the layout has it."""
        i = self.producer.get(tensor)
        if i is None or tensor not in self.from_image or tensor in self.input_copies:
            return None
        if tensor in self.outputs or self.nodes[i].op_type in _ALIASES:
            return None  # what is explained, or the same map under another name
        shape = self.full_shape(tensor)
        elem = self.elem_type(tensor)
        if shape is None or (elem is not None and elem not in _FLOAT_TYPES):
            return None
        layout = self.layout(tensor)
        if layout is None or not self._batch_at(shape, layout):
            return None
        h, w = layout.grid(shape)
        if h == 1 or w == 1 or (isinstance(h, int) and isinstance(w, int) and h * w < 2):
            return None
        node = self.nodes[i]
        return Candidate(node.name, node.op_type, tensor, shape, layout, i)

    def _batch_at(self, shape: tuple[Dim, ...], layout: FeatureLayout) -> bool:
        """The map's batch axis (the one a token layout puts second when sequence first)
        holds the input's batch: not windows of one image stacked as a batch."""
        first = self.shape(self.inputs[0]) if self.inputs else None
        if not first:
            return True
        axis = 1 if isinstance(layout, TokenLayout) and layout.sequence_first else 0
        batch, here = first[0], shape[axis]
        if isinstance(batch, int) and isinstance(here, int):
            return batch == here
        return not isinstance(here, int) or (not isinstance(batch, int) and here == 1)


def transpose_perm(node: onnx.NodeProto) -> list[int] | None:
    """The ``perm`` attribute of a Transpose node, if set."""
    for attr in node.attribute:
        if attr.name == "perm":
            return list(attr.ints)
    return None


def spatial_candidates(model: onnx.ModelProto, index: GraphIndex | None = None) -> list[Candidate]:
    """Every node output that is a feature map on the image grid, in graph order."""
    index = index or GraphIndex(model)
    found = []
    for node in index.nodes:
        for name in node.output:
            cand = index.candidate(name) if name else None
            if cand is not None:
                found.append(cand)
    return found


def fmt_shape(shape: Iterable[Dim], layout: FeatureLayout | None = None) -> str:
    """A shape for people: ints as they are, the batch as ``N``, anything unknown or symbolic
    (exporters' names can be hundreds of characters long) as ``?``; a token map's tokens as
    ``prefix+h×w`` (``(N, 1+14×14, 384)``)."""
    dims = list(shape)
    parts = [str(d) if isinstance(d, int) else ("N" if i == 0 else "?") for i, d in enumerate(dims)]
    if isinstance(layout, TokenLayout) and len(dims) == 3:
        (h, w), axis = layout.hw, layout.spatial_axes[0]
        cells = f"{h}×{w}"
        parts[axis] = f"{layout.prefix}+{cells}" if layout.prefix else cells
        parts[1 - axis] = "N"
    return "(" + ", ".join(parts) + ")"
