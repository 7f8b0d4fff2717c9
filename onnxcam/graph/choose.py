"""Node choice: what ``--node auto`` picks (the map a classifier head pools, the maps where
each scale of a detector's head begins), and how names given to ``--node`` resolve."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import onnx

from ..errors import NodeError
from ..layouts import TokenLayout
from .detector_heads import head_starts
from .index import _ALIASES, Candidate, GraphIndex, fmt_shape, spatial_candidates
from .tokens import attention_input, block_input, takes_prefix

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
        return axes is not None and set(src.layout.spatial_axes) <= {
            a % len(src.shape) for a in axes
        }
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


def detector_choice(index: GraphIndex, outputs: Sequence[str]) -> AutoChoice:
    """The maps where a detector's head begins, one per scale, finest first.

    The head's *ends* are the spatial maps upstream of the detection ``outputs`` that feed no
    other spatial map on the way (the last box and class maps of each scale, before their
    anchors are flattened). Per scale (the ends' height and width), the head begins at the
    last map of that scale that every path from the image to the scale's ends passes through
    (:func:`onnxcam.graph.detector_heads.head_starts`): the neck's output that the box and
    class branches share (YOLOv8's ``cv2``/``cv3``, concatenated per scale or not, YOLOv10's
    one-to-one branch, YOLOv5's ``m.i`` input), never a branch's own convolution. A scale
    without such a map keeps its end. Every scale's map is picked, not only the finest:
    together they localise best on the shipped detector (README, "Detectors and
    segmenters").

    Raises:
        NodeError: no spatial map leads to the outputs.
    """
    picked = head_starts(index, outputs)
    names = ", ".join(f"'{c.label}' {fmt_shape(c.shape)}" for c in picked)
    if len(picked) == 1:
        return AutoChoice(
            picked[0],
            f"the map where the finest scale's detection head begins (scales: {names})",
            None,
        )
    reason = (
        f"the maps where each of the {len(picked)} scales' detection head begins, taken "
        f"together (fused as --fuse says): {names}"
    )
    return AutoChoice(picked[0], reason, None, tuple(picked))


def auto_choice(index: GraphIndex) -> AutoChoice:
    """The map the classifier head pools, stepping back through local pooling to the last
    conv-block activation; for a head that takes a transformer's class token, the last
    attention's input (:func:`.tokens.attention_input`); without a head, the last spatial map
    upstream of the outputs that still feeds a Conv, Gemm or MatMul (not a head's output map
    on its way out).

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
        taken = takes_prefix(index, node)
        if taken is not None:
            return _class_token_choice(index, node, taken)
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
            "the model has no feature map on the image grid (N, C, h, w or N, h, w, C with h, "
            "w > 1, or transformer tokens) computed from its image input; Score-CAM needs "
            "one"
        )
    return AutoChoice(candidates[-1], "the last spatial map upstream of the outputs", None)


def _class_token_choice(index: GraphIndex, node: onnx.NodeProto, taken: Candidate) -> AutoChoice:
    """For a head that takes a transformer's class token: the last attention's input."""
    head = f"{node.op_type} '{node.name or node.output[0]}'"
    found = attention_input(index, taken)
    if found is None:
        return AutoChoice(taken, "the token map whose class token the head takes", head)
    reason = (
        "the last attention's input, after its normalisation: the class token reads the other "
        f"tokens there for the last time ({head} takes only prefix tokens, so later maps' "
        "patch tokens reach no output)"
    )
    return AutoChoice(found, reason, head)


def block_cut(index: GraphIndex) -> tuple[Candidate, Candidate] | None:
    """For a head that takes a transformer's class token: the last block's input and its
    normalised copy (:func:`.tokens.block_input`, then what ``auto`` picks), the two tensors
    OpenVINO XAI's ViTReciproCAM feeds its mosaic at; None for any other model."""
    choice = auto_choice(index)
    norm = choice.candidate
    if choice.head is None or not isinstance(norm.layout, TokenLayout) or not norm.layout.prefix:
        return None
    found = block_input(index, norm)
    return None if found is None else (found, norm)


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
        what = (
            f"has {described}, not a feature map on the image grid (4-D with height and width "
            "> 1, or transformer tokens)"
        )
    raise NodeError(f"'{spec}' outputs '{tensor}', which {what}; {hint}")


def _nearest(index: GraphIndex, position: int) -> Candidate | None:
    candidates = spatial_candidates(index.model, index)
    if not candidates:
        return None
    before = [c for c in candidates if c.index <= position]
    return before[-1] if before else candidates[0]


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
