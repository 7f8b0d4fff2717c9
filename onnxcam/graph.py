"""Pure graph surgery on ``onnx.ModelProto``: find feature maps, expose one, free the batch.

Every function that changes a model works on a copy (``ModelProto().CopyFrom``); the
caller's proto and file are never modified.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import ConfigError, ModelError, NodeError

__all__ = [
    "AutoChoice",
    "Candidate",
    "GraphIndex",
    "auto_candidate",
    "auto_choice",
    "drop_unused_inputs",
    "expose",
    "expose_float32",
    "fmt_shape",
    "load_model",
    "make_batch_dynamic",
    "resolve_node",
    "spatial_candidates",
    "to_float16",
    "transpose_perm",
    "with_input_size",
]

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
# Ops that only move values around: a grid survives them only if its h, w do.
_REARRANGING_OPS = {
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Gather", "GatherElements",
    "Expand", "Tile", "SpaceToDepth", "DepthToSpace",
}  # fmt: skip
# Ops whose output is their input under another name.
_ALIASES = {"Identity", "Dropout"}
# Local pooling between the last conv block and the head; auto looks through it.
_LOCAL_POOLS = {"MaxPool", "AveragePool", "LpPool"}
# Ops after which the spatial dimensions are gone: the classifier head starts there.
_COLLAPSING_OPS = {
    "GlobalAveragePool",
    "GlobalMaxPool",
    "GlobalLpPool",
    "ReduceMean",
    "ReduceMax",
    "ReduceSum",
    "ReduceL2",
    "Flatten",
    "Reshape",
    "AveragePool",
    "MaxPool",
}


@dataclass(frozen=True)
class Candidate:
    """A tensor that can be explained: a 4-D spatial feature map produced by a node.

    Attributes:
        node: name of the producing node ("" when the exporter left it empty).
        op_type: the producing node's operator.
        tensor: name of the output tensor.
        shape: inferred shape, ints where known, symbols or None elsewhere.
        layout: ``"NCHW"`` or ``"NHWC"``, the order of the feature map's axes.
        index: position of the producing node in the graph.
    """

    node: str
    op_type: str
    tensor: str
    shape: tuple[Dim, ...]
    layout: str
    index: int

    @property
    def label(self) -> str:
        """The node's name, or a stand-in when the exporter left it empty."""
        return self.node or f"<{self.op_type} #{self.index}>"

    @property
    def spatial(self) -> tuple[Dim, Dim]:
        """(h, w) of the map."""
        return (self.shape[2], self.shape[3]) if self.layout == "NCHW" else self.shape[1:3]  # type: ignore[return-value]

    @property
    def channels(self) -> Dim:
        """Number of channels K."""
        return self.shape[1] if self.layout == "NCHW" else self.shape[3]


def load_model(source: str | Path | bytes) -> onnx.ModelProto:
    """Load and check an ONNX model from a path (external data resolved next to the file) or
    from its serialized bytes (which cannot refer to external data).

    Raises:
        ModelError: the file is missing, empty, truncated or not an ONNX model.
    """
    if isinstance(source, bytes):
        name = f"the model bytes ({len(source):,} bytes)"
        if not source:
            raise ModelError("the model bytes are empty (expected a serialized ONNX model)")
        try:
            model = onnx.load_model_from_string(source)
        except Exception as exc:
            raise ModelError(
                f"cannot read {name} as an ONNX model ({type(exc).__name__}: {_first_line(exc)})"
            ) from exc
        if any(_is_external(t) for t in model.graph.initializer):
            raise ModelError(
                f"{name} refer to external data files; pass the model's path instead, so the "
                "files are found next to it"
            )
        return _checked(model, name)
    path = Path(source)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path} (expected an .onnx file)")
    if path.stat().st_size == 0:
        raise ModelError(f"model file is empty: {path} (expected an ONNX model)")
    # The checker reads the file itself, before the model is loaded: checking the loaded
    # proto would serialize it again, and either way would hold the weights a third time.
    try:
        onnx.checker.check_model(str(path))
        failed: Exception | None = None
    except Exception as exc:
        failed = exc
    try:
        model = onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # protobuf DecodeError, missing external data, path checks
        raise ModelError(
            f"cannot read {path} as an ONNX model ({type(exc).__name__}: {_first_line(exc)}); "
            "is the file complete and exported with torch.onnx/tf2onnx/paddle2onnx?"
        ) from exc
    return _checked(model, str(path), check=False, failed=failed)


def _is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL


def _decodes(message: Any) -> None:
    """Check every text field of ``message`` is UTF-8 (protobuf hands back bytes for one that
    is not, and fails only when that value is copied somewhere later).

    Raises:
        UnicodeDecodeError: a text field that is not UTF-8.
    """
    for field, value in message.ListFields():
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == 3
        if field.type == field.TYPE_STRING:
            for text in value if repeated else [value]:
                if isinstance(text, bytes):  # protobuf hands back invalid UTF-8 as bytes
                    text.decode("utf-8")
        elif field.type == field.TYPE_MESSAGE:
            for item in value if repeated else [value]:
                _decodes(item)


def _checked(
    model: onnx.ModelProto, name: str, *, check: bool = True, failed: Exception | None = None
) -> onnx.ModelProto:
    """The model, once it has a graph and passes the ONNX checker (run here with ``check``;
    ``failed``: what the checker said of the file when it was checked from there)."""
    try:
        _decodes(model)
    except UnicodeDecodeError:
        raise ModelError(
            f"{name} holds text that is not valid UTF-8: the file is corrupt"
        ) from None
    if len(model.graph.node) == 0 or len(model.graph.input) == 0 or len(model.graph.output) == 0:
        raise ModelError(
            f"{name} is not a usable ONNX model: its graph has "
            f"{len(model.graph.node)} nodes, {len(model.graph.input)} inputs and "
            f"{len(model.graph.output)} outputs (the file may be truncated or not ONNX)"
        )
    if check:
        try:
            onnx.checker.check_model(model)
        except Exception as exc:
            failed = exc
    if failed is not None:
        raise ModelError(f"{name} fails the ONNX checker: {_first_line(failed)}") from failed
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


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
    """A copy where Identity and Cast nodes of (small) constants are Constant nodes themselves.

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
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        skeleton, self.stripped = _skeleton(model)
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
        self._grids: dict[str, tuple[Dim, Dim]] | None = None

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
    def grids(self) -> dict[str, tuple[Dim, Dim]]:
        """The image grid (h, w) of every tensor that still lays features out on the image.

        The input has one; an op that computes from a tensor with a grid (convolution,
        pooling, resizing, an activation, a concatenation) gives its output its own h, w; an op
        that only rearranges (Reshape, Transpose, Flatten, ...) keeps the grid only when h, w
        survive it (a layout change, a channel shuffle). So a detection head's anchors
        reshaped into ``(1, 4, 16, 8400)`` are not a map, however 4-D they look.
        """
        if self._grids is None:
            grids: dict[str, tuple[Dim, Dim]] = {}
            if self.inputs:
                shape = self.shape(self.inputs[0])
                if shape is not None and len(shape) == 4:
                    nhwc = shape[3] in (1, 3) and shape[1] not in (1, 3)
                    grids[self.inputs[0]] = (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
            for node in self.nodes:
                sources = [grids[name] for name in node.input if name in grids]
                if not sources:
                    continue
                for name in node.output:
                    shape = self.shape(name) if name else None
                    if not name or shape is None:
                        if name:
                            grids[name] = sources[0]
                        continue
                    if node.op_type in _REARRANGING_OPS:
                        kept = _grid_in(shape, sources[0])
                        if kept is not None:
                            grids[name] = kept
                    elif len(shape) == 4:
                        grids[name] = (
                            (shape[1], shape[2])
                            if self.layout(name) == "NHWC"
                            else (shape[2], shape[3])
                        )
            self._grids = grids
        return self._grids

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
        scales; the index holds no weights), else None."""
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

    def layout(self, tensor: str) -> str:
        """Guess the axis order of a 4-D feature map from its neighbours."""
        i = self.producer.get(tensor)
        if (
            i is not None
            and self.nodes[i].op_type == "Transpose"
            and (transpose_perm(self.nodes[i]) == [0, 2, 3, 1])
        ):
            return "NHWC"
        for j in self.consumers.get(tensor, []):
            node = self.nodes[j]
            if node.op_type == "Transpose" and transpose_perm(node) == [0, 3, 1, 2]:
                return "NHWC"
            if node.op_type.startswith("Reduce"):
                axes = self.reduce_axes(node)
                if axes is not None and sorted(a % 4 for a in axes) == [1, 2]:
                    return "NHWC"
        return "NCHW"

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
                if self.nodes[j].op_type in _WEIGHTED_OPS and current in self.grids:
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
        """The tensor as a Candidate when it is a 4-D float map with h, w > 1 computed from
        the image (not a weight, a constant or a rearranged copy of the input), else None."""
        i = self.producer.get(tensor)
        if i is None or tensor not in self.from_image or tensor in self.input_copies:
            return None
        if tensor not in self.grids:
            return None
        if tensor in self.outputs or self.nodes[i].op_type in _ALIASES:
            return None  # what is explained, or the same map under another name
        shape = self.shape(tensor)
        elem = self.elem_type(tensor)
        if shape is None or len(shape) != 4 or (elem is not None and elem not in _FLOAT_TYPES):
            return None
        layout = self.layout(tensor)
        h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
        if h == 1 or w == 1 or (isinstance(h, int) and isinstance(w, int) and h * w < 2):
            return None
        node = self.nodes[i]
        return Candidate(node.name, node.op_type, tensor, shape, layout, i)


def _grid_in(shape: tuple[Dim, ...], grid: tuple[Dim, Dim]) -> tuple[Dim, Dim] | None:
    """``grid`` when a rearranged tensor of ``shape`` still holds it as two adjacent axes
    (last two, or 1 and 2 of a 4-D NHWC tensor); unknown sizes match anything."""

    def same(a: Dim, b: Dim) -> bool:
        return not isinstance(a, int) or not isinstance(b, int) or a == b

    pairs = [shape[-2:]] if len(shape) >= 2 else []
    if len(shape) == 4:
        pairs.append(shape[1:3])
    for h, w in pairs:
        if same(h, grid[0]) and same(w, grid[1]):
            return (h, w)
    return None


def transpose_perm(node: onnx.NodeProto) -> list[int] | None:
    """The ``perm`` attribute of a Transpose node, if set."""
    for attr in node.attribute:
        if attr.name == "perm":
            return list(attr.ints)
    return None


def spatial_candidates(model: onnx.ModelProto, index: GraphIndex | None = None) -> list[Candidate]:
    """Every node output that is a 4-D spatial feature map, in graph order."""
    index = index or GraphIndex(model)
    found = []
    for node in index.nodes:
        for name in node.output:
            cand = index.candidate(name) if name else None
            if cand is not None:
                found.append(cand)
    return found


def _collapses_space(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """True for the node where the head begins: it turns a spatial map into a vector."""
    op = node.op_type
    if op not in _COLLAPSING_OPS or not node.input:
        return False
    src = index.candidate(index.unalias(node.input[0]))
    if src is None or index.feeds_a_map(node.output[0]):
        return False
    if op.startswith("Global"):
        return True
    if op in ("Flatten", "Reshape"):
        shape = index.shape(node.output[0])
        return shape is None or len(shape) <= 2
    if op.startswith("Reduce"):
        axes = index.reduce_axes(node)
        spatial_axes = [2, 3] if src.layout == "NCHW" else [1, 2]
        return axes is not None and set(spatial_axes) <= {a % 4 for a in axes}
    # Pooling whose window covers the whole map (old exports of global pooling).
    out = index.candidate(node.output[0])
    shape = index.shape(node.output[0])
    return out is None and shape is not None and len(shape) == 4


@dataclass(frozen=True)
class AutoChoice:
    """What ``--node auto`` picks, and why, in words.

    ``candidates`` holds every picked map (several for a multi-scale detector head, finest
    first); ``candidate`` is the first.
    """

    candidate: Candidate
    reason: str
    head: str | None  # the node where the classifier head starts, None without one
    candidates: tuple[Candidate, ...] = ()

    def __post_init__(self) -> None:
        if not self.candidates:
            object.__setattr__(self, "candidates", (self.candidate,))


_SPLITTING_OPS = ("Split", "Slice", "Identity", "Transpose", "Reshape")

#: ``--node auto`` on a detector: the maps at the start of every scale's head (``all``), or
#: only the finest scale's (``finest``). Chosen by the localisation measured on the shipped
#: detector (BENCHMARKS.md, "Which node for a detector").
DETECTOR_SCALES = "all"


def detector_choice(index: GraphIndex, outputs: Sequence[str]) -> AutoChoice:
    """The maps where a detector's head begins, one per scale, finest first.

    The head's *ends* are the spatial maps upstream of the detection ``outputs`` that feed no
    other spatial map on the way (the last box and class convolutions of each scale, before
    their anchors are flattened; a prediction convolution whose channels are then split
    into box and class parts, as PicoDet's, counts as one end). Per scale (the ends' height and
    width), the head begins at the last map of that scale of which every end of the scale is
    a descendant: the neck's output that the box and class branches share (YOLOv8's
    ``cv2``/``cv3``, YOLOv5's ``m.i`` input). A scale whose ends share no such map keeps its
    end.

    Raises:
        NodeError: no spatial map leads to the outputs.
    """
    upstream = set().union(*(index.ancestors(name) for name in outputs))
    candidates = [c for c in spatial_candidates(index.model, index) if c.index in upstream]
    if not candidates:
        raise NodeError("no spatial feature map leads to the detection outputs")
    above = {
        c.tensor: {name for i in index.ancestors(c.tensor) for name in index.nodes[i].input}
        for c in candidates
    }

    def feeds(a: Candidate, b: Candidate) -> bool:  # tensors, not nodes: a Split has several
        return a.tensor in above[b.tensor]

    ends = [c for c in candidates if not any(feeds(c, d) for d in candidates)]
    by_tensor = {c.tensor: c for c in candidates}
    for k, end in enumerate(ends):  # a prediction conv split into box and class channels
        while True:
            node = index.nodes[end.index]
            source = by_tensor.get(node.input[0]) if node.input else None
            if node.op_type not in _SPLITTING_OPS or source is None:
                break
            end = source
        ends[k] = end
    ends = list({e.tensor: e for e in ends}.values())
    scales: dict[tuple[Dim, Dim], list[Candidate]] = {}
    for end in ends:
        scales.setdefault(end.spatial, []).append(end)
    picked = []
    for grid, group in scales.items():
        shared = [
            c
            for c in candidates
            if c.spatial == grid and c not in group and all(feeds(c, e) for e in group)
        ]
        picked.append(max(shared, key=lambda c: c.index) if shared else group[-1])

    def area(c: Candidate) -> int:
        h, w = c.spatial
        return (h if isinstance(h, int) else 0) * (w if isinstance(w, int) else 0)

    picked.sort(key=area, reverse=True)
    names = ", ".join(f"'{c.label}' {fmt_shape(c.shape)}" for c in picked)
    if DETECTOR_SCALES == "finest" or len(picked) == 1:
        return AutoChoice(
            picked[0],
            f"the map where the finest scale's detection head begins (scales: {names})",
            None,
        )
    reason = (
        f"the maps where each of the {len(picked)} scales' detection head begins, taken "
        f"together (one map per scale from its own channels, averaged): {names}"
    )
    return AutoChoice(picked[0], reason, None, tuple(picked))


def auto_choice(index: GraphIndex) -> AutoChoice:
    """The map the classifier head pools, stepping back through local pooling to the last
    conv-block activation; without a head, the last spatial map upstream of the outputs that
    still feeds a Conv, Gemm or MatMul (not a head's output map on its way out).

    The head starts at the last node upstream of an output that collapses a spatial map to
    a vector (global pooling, a spatial ReduceMean, Flatten or a 2-D Reshape). When that map
    comes out of a local pooling (conv -> MaxPool -> Flatten, as in VGG), the pooling's input
    is taken: the same channels at a finer resolution.

    Raises:
        NodeError: the graph has no spatial feature map upstream of its outputs.
    """
    upstream = set().union(*(index.ancestors(name) for name in index.outputs))
    for i in sorted(upstream, reverse=True):
        node = index.nodes[i]
        if not _collapses_space(index, node):
            continue
        tensor = node.input[0]
        stepped = []
        while (j := index.producer.get(tensor)) is not None:
            pool = index.nodes[j]
            if pool.op_type not in (*_LOCAL_POOLS, *_ALIASES, "Transpose"):
                break
            if pool.op_type in _LOCAL_POOLS and index.candidate(pool.input[0]) is None:
                break
            if pool.op_type in _LOCAL_POOLS:
                stepped.append(pool)
            tensor = pool.input[0]
        cand = index.candidate(tensor)
        if cand is None:
            continue
        head = f"{node.op_type} '{node.name or node.output[0]}'"
        reason = "the map that the head collapses into a vector"
        if stepped:
            pools = " and ".join(f"{p.op_type} '{p.name or p.output[0]}'" for p in stepped)
            reason = (
                f"the last conv-block map, before {pools}: the channels the head sees, at a "
                "finer resolution"
            )
        return AutoChoice(cand, reason, head)
    candidates = [c for c in spatial_candidates(index.model, index) if c.index in upstream]
    features = [c for c in candidates if index.feeds_weights(c.tensor)]
    candidates = features or candidates
    if not candidates:
        raise NodeError(
            "the model has no 4-D spatial feature map (N, C, h, w with h, w > 1) computed from "
            "its image input; Score-CAM needs a convolutional feature map"
        )
    return AutoChoice(candidates[-1], "the last spatial map upstream of the outputs", None)


def auto_candidate(model: onnx.ModelProto, index: GraphIndex | None = None) -> Candidate:
    """The candidate of :func:`auto_choice`."""
    return auto_choice(index or GraphIndex(model)).candidate


def resolve_nodes(
    model: onnx.ModelProto,
    spec: str,
    index: GraphIndex | None = None,
    *,
    detection: Sequence[str] | None = None,
) -> tuple[Candidate, ...]:
    """Resolve ``--node``: ``auto``, one node or tensor name, or several joined by commas
    (``a,b,c``: Score-CAM takes its masks from the channels of all of them).

    ``detection`` names a detector's outputs: ``auto`` then picks the maps where its head
    begins (:func:`detector_choice`).

    Raises:
        NodeError: as :func:`resolve_node`, for the first name that fails.
    """
    index = index or GraphIndex(model)
    if spec == "auto":
        choice = detector_choice(index, detection) if detection else auto_choice(index)
        return choice.candidates
    names = [spec]
    if "," in spec and not _names_a_node(index, spec):
        names = [part.strip() for part in spec.split(",") if part.strip()]
    found = [resolve_node(model, name, index) for name in names]
    return tuple({c.tensor: c for c in found}.values())


def _names_a_node(index: GraphIndex, spec: str) -> bool:
    return spec in index.producer or any(n.name == spec for n in index.nodes)


def resolve_node(model: onnx.ModelProto, spec: str, index: GraphIndex | None = None) -> Candidate:
    """Resolve ``--node``: ``auto``, a node name, or an output tensor name.

    Raises:
        NodeError: unknown name (closest names listed), a tensor inside a subgraph, or a
            tensor that is not a spatial map (nearest spatial map named).
    """
    index = index or GraphIndex(model)
    if spec == "auto":
        return auto_candidate(model, index)
    by_name = [n for n in index.nodes if n.name == spec]
    if by_name:
        tensors = [t for t in by_name[0].output if t]
    elif spec in index.producer:
        tensors = [spec]
    else:
        if spec in _subgraph_names(index.nodes):
            raise NodeError(
                f"'{spec}' lives inside an If/Loop/Scan subgraph, which cannot be exposed as a "
                "graph output; choose a node of the main graph (see `onnxcam nodes`)"
            )
        if spec in index.inputs or spec in index.initializers:
            raise NodeError(f"'{spec}' is a graph input or weight, not a node's output")
        names = [n.name for n in index.nodes if n.name] + list(index.producer)
        close = difflib.get_close_matches(spec, names, n=5, cutoff=0.5)
        containing = [n for n in dict.fromkeys(names) if spec.lower() in n.lower()]
        close = list(dict.fromkeys(close + containing))[:5]
        hint = f"closest: {', '.join(close)}" if close else "run `onnxcam nodes MODEL` to list them"
        raise NodeError(f"no node or tensor named '{spec}' in the model; {hint}")
    for tensor in tensors:
        cand = index.candidate(tensor)
        if cand is not None:
            return cand
    tensor = tensors[0] if tensors else spec
    shape = index.shape(tensor)
    described = "unknown shape" if shape is None else f"shape {fmt_shape(shape)}"
    nearest = _nearest(index, index.producer.get(tensor, 0))
    hint = (
        f"nearest spatial map: '{nearest.label}' (tensor '{nearest.tensor}', shape "
        f"{fmt_shape(nearest.shape)})"
        if nearest
        else "the model has no spatial map"
    )
    if tensor not in index.from_image:
        what = "does not depend on the image input (a weight or a constant)"
    elif tensor in index.input_copies:
        what = "is the image input itself, rearranged or rescaled, not a feature map"
    else:
        what = f"has {described}, not a spatial feature map (4-D with height and width > 1)"
    raise NodeError(f"'{spec}' outputs '{tensor}', which {what}; {hint}")


def _nearest(index: GraphIndex, position: int) -> Candidate | None:
    candidates = spatial_candidates(index.model, index)
    if not candidates:
        return None
    before = [c for c in candidates if c.index <= position]
    return before[-1] if before else candidates[0]


def fmt_shape(shape: Iterable[Dim]) -> str:
    """A shape for people: ints as they are, the batch as ``N``, anything unknown or symbolic
    (exporters' names can be hundreds of characters long) as ``?``."""
    parts = [
        str(d) if isinstance(d, int) else ("N" if i == 0 else "?") for i, d in enumerate(shape)
    ]
    return "(" + ", ".join(parts) + ")"


def _subgraph_names(nodes: Iterable[onnx.NodeProto]) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        for attr in node.attribute:
            graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for graph in graphs:
                for sub in graph.node:
                    names.add(sub.name)
                    names.update(sub.output)
                names |= _subgraph_names(graph.node)
    return names


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


# ----------------------------------------------------------------------------- the head

_INTEGER_LIKE = {
    onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
    onnx.TensorProto.UINT64, onnx.TensorProto.UINT32, onnx.TensorProto.UINT16,
    onnx.TensorProto.UINT8, onnx.TensorProto.BOOL,
}  # fmt: skip
_CLEAN_SUFFIX = "__onnxcam_clean"
_FLOAT32_SUFFIX = "__onnxcam_float32"


@dataclass(frozen=True)
class Head:
    """The part of a model after its explained maps: feature maps in, the model's outputs out.

    Attributes:
        model: the head as its own model (nodes, weights and opsets copied from the model).
        cuts: the explained tensors, in the order given; ``feeds[cut]`` is the head input
            that takes each one.
        clean: the other tensors computed from the image that the head reads (a skip
            connection, another scale of a detector, an output that does not depend on the
            cuts): the head takes their clean values, ``feeds[name]`` being its input.
        feeds: tensor of the full model -> the head input that takes it.
        nodes: how many nodes the head runs (``total`` in the whole model).
        total: the whole model's node count.
    """

    model: onnx.ModelProto
    cuts: tuple[str, ...]
    clean: tuple[str, ...]
    feeds: dict[str, str]
    nodes: int
    total: int


def _outer_refs(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from the scopes around it."""
    defined = {v.name for v in graph.input} | {i.name for i in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(name for name in node.input if name)
        for attr in node.attribute:
            for sub in [*attr.graphs, *([attr.g] if attr.HasField("g") else [])]:
                used |= _outer_refs(sub)
        defined.update(name for name in node.output if name)
    used.update(o.name for o in graph.output)
    return used - defined


def _reads(node: onnx.NodeProto) -> list[str]:
    """Every tensor a node reads: its inputs and what its subgraphs take from outside."""
    names = [name for name in node.input if name]
    for attr in node.attribute:
        for sub in [*attr.graphs, *([attr.g] if attr.HasField("g") else [])]:
            names.extend(sorted(_outer_refs(sub)))
    return names


def split_head(
    model: onnx.ModelProto,
    cuts: Sequence[str],
    index: GraphIndex | None = None,
    *,
    outputs: Sequence[str] | None = None,
) -> Head:
    """The head of ``model`` after the tensors ``cuts``, as a model of its own (a copy).

    The head runs every node that depends on a cut and leads to an output. Whatever else
    those nodes read is settled like this: weights and constant subgraphs come along; an
    integer tensor computed from the image (a shape, an index) comes along with the nodes
    that compute it, so it follows the batch the head runs; any other tensor computed from
    the image (a skip connection, another scale's map, the image itself) becomes a head
    input that takes its clean value (``Head.clean``). An output that does not depend on the
    cuts is passed through from such an input. Float16 inputs are taken as float32 and cast.
    A cut computed from another cut (two scales of a detector's neck) is an input too: the
    nodes between them are not run.

    Args:
        model: the model, with its weights (it is read, never changed).
        cuts: the tensors whose values the head takes as inputs.
        index: the model's index (built when not given); its nodes must be the model's.
        outputs: the outputs the head produces (default: all of the model's).

    Raises:
        NodeError: a cut is not a tensor of the model, or no output depends on the cuts.
    """
    index = index or GraphIndex(model)
    nodes = model.graph.node
    wanted = list(outputs) if outputs is not None else [o.name for o in model.graph.output]
    for cut in cuts:
        if cut not in index.producer:
            raise NodeError(f"no node produces tensor '{cut}'")
    reach = set(cuts)
    downstream: set[int] = set()
    for i, node in enumerate(nodes):
        if any(name in cuts for name in node.output):
            continue  # a cut is fed to the head, never computed in it (one cut after another)
        if any(name in reach for name in _reads(node)):
            downstream.add(i)
            reach.update(name for name in node.output if name)
    # the nodes that lead to an output from the cuts: backwards from the outputs
    made_by = {name: i for i in downstream for name in nodes[i].output if name}
    taken: set[int] = set()
    stack = list(wanted)
    while stack:
        j = made_by.get(stack.pop())
        if j is not None and j not in taken:
            taken.add(j)
            stack.extend(_reads(nodes[j]))
    if not any(name in reach for name in wanted):
        shown = ", ".join(f"'{c}'" for c in cuts)
        raise NodeError(f"no output of the model depends on {shown}")
    produced = {name for i in taken for name in nodes[i].output if name}
    inits = {init.name for init in model.graph.initializer}
    clean: list[str] = []
    pending = [name for i in sorted(taken) for name in _reads(nodes[i])]
    pending += [name for name in wanted if name not in reach]
    seen: set[str] = set()
    while pending:
        name = pending.pop(0)
        if name in seen or name in produced or name in inits or name in cuts:
            continue
        seen.add(name)
        j = index.producer.get(name)
        computed = name in index.from_image
        if j is not None and (not computed or index.elem_type(name) in _INTEGER_LIKE):
            taken.add(j)  # constants, and shapes or indices that must follow the batch
            produced.update(n for n in nodes[j].output if n)
            pending.extend(_reads(nodes[j]))
        else:
            clean.append(name)
    head = onnx.ModelProto(ir_version=model.ir_version, producer_name="onnxcam-head")
    head.opset_import.extend(model.opset_import)
    head.functions.extend(model.functions)
    graph = head.graph
    graph.name = f"{model.graph.name or 'model'}_head"
    feeds: dict[str, str] = {}
    passed = [name for name in wanted if name not in reach and name in clean]
    for name in [*cuts, *clean]:
        elem = index.elem_type(name) or onnx.TensorProto.FLOAT
        shape = index.shape(name)
        dims: list[int | str | None] | None = None
        if shape:  # the batch as it is (a number or a name), the rest where known
            dims = [shape[0] if shape[0] is not None else "batch"]
            dims += [d if isinstance(d, int) else None for d in shape[1:]]
        feed = name + _CLEAN_SUFFIX if name in passed else name
        if elem == onnx.TensorProto.FLOAT16:  # fed float32 like every exposed map
            graph.node.append(
                onnx.helper.make_node(
                    "Cast", [feed + _FLOAT32_SUFFIX], [feed], to=elem, name=f"onnxcam/cast_{name}"
                )
            )
            feed, elem = feed + _FLOAT32_SUFFIX, onnx.TensorProto.FLOAT
        graph.input.append(onnx.helper.make_tensor_value_info(feed, elem, dims))
        feeds[name] = feed
        if name in passed:
            graph.node.append(
                onnx.helper.make_node(
                    "Identity", [name + _CLEAN_SUFFIX], [name], name=f"onnxcam/{name}"
                )
            )
    graph.node.extend(nodes[i] for i in sorted(taken))
    used = {name for i in taken for name in _reads(nodes[i])}
    graph.initializer.extend(init for init in model.graph.initializer if init.name in used)
    graph.sparse_initializer.extend(
        s for s in model.graph.sparse_initializer if s.values.name in used
    )
    declared = {o.name: o for o in model.graph.output}
    for name in wanted:
        if name in declared:
            graph.output.append(declared[name])
        else:
            graph.output.append(
                onnx.helper.make_tensor_value_info(name, index.elem_type(name) or 1, None)
            )
    return Head(head, tuple(cuts), tuple(clean), feeds, len(taken), len(nodes))


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
                values = np.exp(values - values.max(axis=1, keepdims=True))
                values /= values.sum(axis=1, keepdims=True)
            elif head.activation == "sigmoid":
                values = 1.0 / (1.0 + np.exp(-values))
            out[name] = values.astype(np.float32).reshape(len(rows), *head.shape)
        return out


class _NotLinear(Exception):
    pass


def linear_head(head: Head, *, layout: str = "NCHW") -> LinearHead:
    """Read the weights of every output that ``head`` computes as ``act(W · GAP(A) + b)`` from
    its one cut ``A``: global average pooling (GlobalAveragePool, or ReduceMean over the
    spatial axes of ``layout``), then Flatten/Reshape/Squeeze, then a Gemm or a MatMul (+ Add)
    or no linear layer at all, then optionally Softmax or Sigmoid and shape-only ops.

    Raises:
        ConfigError: ``head`` has several cuts.
    """
    if len(head.cuts) != 1:
        raise ConfigError("a linear head is read for one node; several were given")
    graph = head.model.graph
    producer = {name: node for node in graph.node for name in node.output if name}
    weights = {init.name: init for init in graph.initializer}
    start = head.feeds[head.cuts[0]]

    def constant(name: str) -> np.ndarray | None:
        if name in weights:
            return numpy_helper.to_array(weights[name]).astype(np.float64)
        node = producer.get(name)
        if node is not None and node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            return None if value is None else numpy_helper.to_array(value).astype(np.float64)
        if node is not None and node.op_type in ("Identity", "Cast") and node.input:
            return constant(node.input[0])
        return None

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
            axes = attr(node, "axes", None)
            if axes is None and len(node.input) > 1 and node.input[1]:
                found = constant(node.input[1])
                axes = None if found is None else [int(a) for a in found.reshape(-1)]
            spatial = {2, 3} if layout == "NCHW" else {1, 2}
            pooled = axes is not None and {int(a) % 4 for a in axes} == spatial
        if not pooled:
            raise fail(f"{named(node)} is not a global average pooling")
        name = step(node, node.input[0])
        while (node := producer.get(name)) is not None and node.op_type in _POOL_ALIASES:
            name = step(node, node.input[0])
        if name != start:
            raise fail("the pooling does not read the node's map")
        k = _channels(head, layout)
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


def _channels(head: Head, layout: str) -> int:
    value = next(v for v in head.model.graph.input if v.name == head.feeds[head.cuts[0]])
    dims = value.type.tensor_type.shape.dim
    position = 1 if layout == "NCHW" else 3
    if len(dims) != 4 or not dims[position].HasField("dim_value"):
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
