"""The head split: the part of a model after its explained maps, as a model of its own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from ..errors import NodeError
from ..layouts import TokenLayout
from .index import GraphIndex

_INTEGER_LIKE = {
    onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
    onnx.TensorProto.UINT64, onnx.TensorProto.UINT32, onnx.TensorProto.UINT16,
    onnx.TensorProto.UINT8, onnx.TensorProto.BOOL,
}  # fmt: skip
_CLEAN_SUFFIX = "__onnxcam_clean"
#: The name a sequence-first tensor takes batch first (a head input, an exposed output).
BATCH_FIRST_SUFFIX = "__onnxcam_batch_first"
_FLOAT32_SUFFIX = "__onnxcam_float32"


@dataclass(frozen=True)
class Head:
    """The part of a model after its explained maps: feature maps in, the model's outputs out.

    Attributes:
        model: the head as its own model (nodes, weights and opsets copied from the model).
        cuts: the explained tensors, in the order given; ``feeds[cut]`` is the head input
            that takes each one.
        side: the head's side inputs: the other tensors computed from the image that it
            reads (a skip connection, another scale of a detector, an output that does not
            depend on the cuts); it takes their clean values, ``feeds[name]`` being its input.
        feeds: tensor of the full model -> the head input that takes it.
        nodes: how many nodes the head runs (``total`` in the whole model).
        total: the whole model's node count.
        batch_first: the side inputs that are sequence first (``(L, B, D)``, as OpenAI
            CLIP's blocks): the head takes them batch first and transposes them itself, so
            every feed is batched along its first axis.
    """

    model: onnx.ModelProto
    cuts: tuple[str, ...]
    side: tuple[str, ...]
    feeds: dict[str, str]
    nodes: int
    total: int
    batch_first: tuple[str, ...] = ()


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
    input that takes its clean value (``Head.side``). An output that does not depend on the
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
    side: list[str] = []
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
            side.append(name)
    head = onnx.ModelProto(ir_version=model.ir_version, producer_name="onnxcam-head")
    head.opset_import.extend(model.opset_import)
    head.functions.extend(model.functions)
    graph = head.graph
    graph.name = f"{model.graph.name or 'model'}_head"
    feeds: dict[str, str] = {}
    passed = [name for name in wanted if name not in reach and name in side]
    turned = [name for name in side if name not in passed and _sequence_first(index, name)]
    for name in [*cuts, *side]:
        elem = index.elem_type(name) or onnx.TensorProto.FLOAT
        shape = index.shape(name)
        if shape and name in turned:
            shape = (shape[1], shape[0], *shape[2:])
        dims: list[int | str | None] | None = None
        if shape:  # the batch as it is (a number or a name), the rest where known
            dims = [shape[0] if shape[0] is not None else "batch"]
            dims += [d if isinstance(d, int) else None for d in shape[1:]]
        feed = name + _CLEAN_SUFFIX if name in passed else name
        if name in turned:
            feed = name + BATCH_FIRST_SUFFIX
            graph.node.append(
                onnx.helper.make_node("Transpose", [feed], [name], perm=[1, 0, 2], name=feed)
            )
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
    return Head(head, tuple(cuts), tuple(side), feeds, len(taken), len(nodes), tuple(turned))


def _sequence_first(index: GraphIndex, name: str) -> bool:
    """``name`` is ``(L, B, D)``: a sequence-first token map, or a tensor whose second axis
    holds the image input's batch."""
    layout = index.layout(name)
    if isinstance(layout, TokenLayout):
        return layout.sequence_first
    shape, first = index.shape(name), index.shape(index.inputs[0]) if index.inputs else None
    if not shape or not first or len(shape) != 3 or isinstance(first[0], int):
        return False
    return shape[1] == first[0] and shape[0] != first[0]
