"""Everything an Explainer builds once: the model loaded and checked, the node resolved, the
feature map exposed, the head after it split off, the batch dimension freed where provable, and
the session opened (the head's session opens when a method first needs it)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import onnx

from . import graph, modelinfo
from .backends import Backend, OpenOptions, get_backend
from .config import PRESET_KEY, ExplainerConfig, normalization, preset_name, validate
from .detformats import YOLO_FORMATS
from .errors import ConfigError, ModelError, NodeError
from .labels import LabelError, labels_from_metadata, load_labels
from .layouts import TokenLayout
from .methods import METHODS, Method
from .methods.recipro import ReciproOptions
from .preprocess import InputSpec, Normalization
from .runner import Runnable, Stage
from .targets import OutputInfo

__all__ = ["Prepared", "Stages", "head_stage", "linear_stage", "prepare"]


@dataclass(frozen=True)
class Prepared:
    """The loaded model and its session.

    Attributes:
        metadata: the model's ``metadata_props``.
        norm: the input normalisation.
        spec: what the image input wants (layout, size, channels, dtype).
        candidates: the explained node(s): one, or several whose channels are taken together.
        feature_outputs: the graph outputs that carry their maps, in the same order.
        outputs: the model's own outputs, in graph order.
        session: what the backend opened: one session serving every pass.
        fixed_batch: the model's batch dimension when it could not be freed, else None.
        dynamic_size: the model takes inputs of any height and width.
        default_batch: the batch size for this model and provider.
        labels: class names, when known.
        notes: things worth telling the user about the model.
        kind: what the model is for (classifier, detector, segmenter), and why.
        resize: how images are fitted into the input: ``stretch`` or ``letterbox``.
        head: the model after the explained node(s), for methods that perturb feature maps
            (None when it could not be split off: ``head_note`` says why).
        head_note: why there is no head.
        side_outputs: for each of the head's side inputs (taken at its clean value), the
            output of the session that gives it.
        provider: what serves the session (the backend says).
        fuse: how the maps of several candidates combine (``equal`` or ``sum``).
        instead: with ``--node auto``, the node spec to try when a map comes out all zero:
            the picked maps one layer earlier (:func:`onnxcam.graph.earlier_maps`); empty
            when none is found or the node was named.
    """

    metadata: dict[str, str]
    norm: Normalization
    spec: InputSpec
    candidates: tuple[graph.Candidate, ...]
    feature_outputs: tuple[str, ...]
    outputs: tuple[OutputInfo, ...]
    session: Runnable
    fixed_batch: int | None
    dynamic_size: bool
    default_batch: int
    labels: list[str] | None
    notes: tuple[str, ...]
    kind: modelinfo.ModelKind
    resize: str
    head: graph.Head | None = None
    head_note: str | None = None
    side_outputs: tuple[tuple[str, str], ...] = ()
    provider: str = ""
    fuse: str = "equal"
    instead: str = ""


def prepare(config: ExplainerConfig) -> Prepared:
    """Load, resolve, rewrite and open the model of ``config`` (the file is never modified).

    Raises:
        ConfigError, ModelError, NodeError, DeviceError: what is wrong, in one line.
    """
    validate(config)
    backend = get_backend(config.backend)
    notes: list[str] = backend.notes()
    model, unused = graph.drop_unused_inputs(graph.load_model(config.model))
    if unused:
        shown = ", ".join(f"'{name}'" for name in unused)
        notes.append(f"the model declares inputs that no node reads ({shown}); they are left out")
    index = graph.GraphIndex(model)
    metadata = {p.key: p.value for p in model.metadata_props}
    spec = modelinfo.input_spec(
        index,
        layout=config.layout,
        size=config.size,
        default_size=modelinfo.metadata_size(metadata),
    )
    sized = _sized(index, spec)
    kind = modelinfo.model_kind(
        {name: sized.shape(name) for name in index.outputs}, metadata, (spec.height, spec.width)
    )
    yolo = kind.detection is not None and kind.detection.format in YOLO_FORMATS
    norm = _normalization(config, metadata, index, notes, "unit" if yolo else "imagenet")
    scaled = modelinfo.in_graph_scaling(index) is not None
    if yolo and config.preset is None and PRESET_KEY not in metadata and not scaled:
        notes.append("a YOLO-family detector: preset unit (RGB / 255), as its exporters use")
    resize = config.resize or ("letterbox" if yolo else "stretch")
    detection = kind.detection.outputs if kind.detection is not None else None
    candidates = graph.resolve_nodes(sized.model, config.node, sized, detection=detection)
    instead = _instead(sized, candidates, config.node)
    if config.node == "auto" and _cuts_at_block(config):
        candidates = graph.block_cut(sized) or candidates
    model, candidates, index = _batch_first(model, candidates, index)
    outputs = tuple(
        OutputInfo(name, index.shape(name), modelinfo.output_activation(index, name))
        for name in index.outputs
    )
    # The weights are held once: the loaded proto is ours, so it is rewritten in place, then
    # serialized, and dropped before ONNX Runtime makes its own copy (the head copies its own).
    cuts = [cand.tensor for cand in candidates]
    split = config.split_head or METHODS[config.method].space in ("head", "linear")
    side_outputs: list[tuple[str, str]] = []
    if config.fp16:
        exposed = graph.to_float16(model)
        head, head_note = _split(exposed, cuts, graph.GraphIndex(exposed), index.outputs, split)
        exposed_as: dict[str, str] = {}
        for name in [*cuts, *(head.side if head else ())]:
            exposed, exposed_as[name] = graph.expose_float32(exposed, name)
        feature_outputs = [exposed_as[name] for name in cuts]
        side_outputs = [(name, exposed_as[name]) for name in (head.side if head else ())]
    else:
        exposed = model
        head, head_note = _split(exposed, cuts, index, index.outputs, split)
        for name in [*cuts, *(head.side if head else ())]:
            if head is not None and name in head.batch_first:
                exposed, turned = graph.batch_first(exposed, name, copy=False, output=True)
                side_outputs.append((name, turned))
                continue
            exposed = graph.expose(exposed, name, index, copy=False)
            if name not in cuts:
                side_outputs.append((name, name))
        feature_outputs = cuts
    del model
    plain, freed, batch_dim = _serialized(exposed, index)
    del exposed
    session, fixed = _open_session(backend, plain, freed, batch_dim, spec, config, notes)
    del plain, freed
    if head is not None and batch_dim is not None and fixed is None:  # freed: the head too
        head = replace(head, model=graph.make_batch_dynamic(head.model)[0])
    labels = _labels(config.labels, metadata, notes)
    if head is not None and head.side and METHODS[config.method].space == "head":
        shown = ", ".join(f"'{name}'" for name in head.side)
        notes.append(
            f"the head after the node also reads {shown}, computed from the image before the "
            "node: it gets their clean values"
        )
    default_batch = backend.default_batch(index, spec, session)
    shape = index.shape(spec.name) or ()
    dynamic = not all(isinstance(d, int) for d in shape[1:])
    return Prepared(
        metadata, norm, spec, candidates, tuple(feature_outputs), outputs, session, fixed, dynamic,
        default_batch, labels, tuple(notes), kind, resize, head, head_note, tuple(side_outputs),
        backend.provider(session), config.fuse, instead,
    )  # fmt: skip


def _batch_first(
    model: onnx.ModelProto, candidates: tuple[graph.Candidate, ...], index: graph.GraphIndex
) -> tuple[onnx.ModelProto, tuple[graph.Candidate, ...], graph.GraphIndex]:
    """Sequence-first token maps replaced by batch-first copies of them
    (:func:`graph.batch_first`): every pass batches along the first axis."""
    if not any(_sequence_first(c) for c in candidates):
        return model, candidates, index
    made = []
    for cand in candidates:
        if _sequence_first(cand):
            assert isinstance(cand.layout, TokenLayout)
            model, tensor = graph.batch_first(model, cand.tensor, copy=False)
            layout = TokenLayout(cand.layout.hw, cand.layout.prefix)
            shape = (cand.shape[1], cand.shape[0], *cand.shape[2:])
            cand = replace(cand, tensor=tensor, layout=layout, shape=shape)
        made.append(cand)
    return model, tuple(made), graph.GraphIndex(model)


def _cuts_at_block(config: ExplainerConfig) -> bool:
    """The method's settings feed a transformer's last block at its two inputs."""
    return isinstance(config.options, ReciproOptions) and config.options.cut == "block"


def _sequence_first(cand: graph.Candidate) -> bool:
    return isinstance(cand.layout, TokenLayout) and cand.layout.sequence_first


def _instead(index: graph.GraphIndex, picked: tuple[graph.Candidate, ...], node: str) -> str:
    """The ``--node`` value naming the maps one layer before what ``auto`` picked ("" when
    the node was named, or there is none)."""
    if node != "auto":
        return ""
    earlier = graph.earlier_maps(index, picked)
    return ",".join(_node_spec(index, c) for c in earlier)


def _node_spec(index: graph.GraphIndex, cand: graph.Candidate) -> str:
    """What ``--node`` takes for the map: its node's name when that names it alone."""
    outputs = [name for name in index.nodes[cand.index].output if name]
    return cand.node if cand.node and len(outputs) == 1 else cand.tensor


def _split(
    model: onnx.ModelProto,
    cuts: list[str],
    index: graph.GraphIndex,
    outputs: list[str],
    wanted: bool,
) -> tuple[graph.Head | None, str | None]:
    """The head after ``cuts`` when ``wanted``, or None and why not (the methods that need it
    say so)."""
    if not wanted:
        return None, "it is split off only for a method that runs on it, or with split_head=True"
    try:
        return graph.split_head(model, cuts, index, outputs=outputs), None
    except NodeError as exc:
        return None, str(exc)
    except (KeyError, IndexError, ValueError) as exc:  # a graph the index reads unusually
        return None, f"the graph could not be split ({type(exc).__name__}: {exc})"


def head_stage(prepared: Prepared, config: ExplainerConfig, method: str) -> Stage:
    """A session over the head, with the model's fixed batch when it has one.

    Raises:
        ConfigError: the model has no head to split off.
    """
    if config.backend == "remote":
        raise ConfigError(
            f"method '{method}' runs the model after node '{_label(prepared)}', which the "
            "predictor does not serve (it serves the whole model): the input-space methods "
            "(scorecam, sscam, iscam, groupcam, rise) need only the model"
        )
    if prepared.head is None:
        raise ConfigError(
            f"method '{method}' runs the model after node '{_label(prepared)}', which could "
            f"not be split off: {prepared.head_note}"
        )
    head = prepared.head.model.SerializeToString()
    return Stage(_open(get_backend(config.backend), head, config), prepared.fixed_batch)


def linear_stage(prepared: Prepared, method: str) -> Stage:
    """The global-average-pooling + linear head read from the graph, run in numpy.

    Raises:
        ConfigError: several nodes, no head, or no output computed that way (what was found).
    """
    if len(prepared.candidates) > 1:
        raise ConfigError(f"method '{method}' reads the head of one node; pass one --node")
    if prepared.head is None:
        raise ConfigError(
            f"method '{method}' needs global average pooling and a linear layer after node "
            f"'{_label(prepared)}': {prepared.head_note}"
        )
    cand = prepared.candidates[0]
    linear = graph.linear_head(prepared.head, layout=cand.layout, channels=cand.channels)
    if not linear.outputs:
        raise ConfigError(
            f"method '{method}' cannot read weights: {next(iter(linear.missing.values()))}"
        )
    return Stage(linear)


class Stages:
    """Where methods' passes run beyond the model: the head after the node and the linear head
    read from the graph, each opened once, when a method first needs it (thread-safe)."""

    def __init__(self, prepared: Prepared, config: ExplainerConfig) -> None:
        self._prepared = prepared
        self._config = config
        self._made: dict[str, Stage] = {}
        self._lock = threading.Lock()

    def for_method(self, method: Method) -> Stage | None:
        """None for the model; else the stage of ``method.space``.

        Raises:
            ConfigError: the model has no head of the kind the method needs.
        """
        if method.space not in ("head", "linear"):
            return None
        with self._lock:
            if method.space not in self._made:
                if method.space == "head":
                    made = head_stage(self._prepared, self._config, method.name)
                else:
                    made = linear_stage(self._prepared, method.name)
                self._made[method.space] = made
            return self._made[method.space]


def _label(prepared: Prepared) -> str:
    return ",".join(c.label for c in prepared.candidates)


def _normalization(
    config: ExplainerConfig,
    metadata: dict[str, str],
    index: graph.GraphIndex,
    notes: list[str],
    default: str,
) -> Normalization:
    """The preset, defaulting to ``raw`` when the graph rescales pixels itself."""
    scaling = modelinfo.in_graph_scaling(index)
    if scaling is None:
        return normalization(config, metadata, default=default)
    chosen = preset_name(config, metadata, "raw")
    if chosen == "raw" and config.preset is None and PRESET_KEY not in metadata:
        notes.append(f"the model rescales pixels itself ({scaling}): using preset raw (0..255)")
    elif chosen not in ("raw", "caffe"):
        notes.append(
            f"the model rescales pixels itself ({scaling}), and preset {chosen} rescales them "
            "too: the input is normalised twice unless that is what the model expects"
        )
    return normalization(config, metadata, default="raw")


def _sized(index: graph.GraphIndex, spec: InputSpec) -> graph.GraphIndex:
    """The graph with shapes inferred for the input size in use, so every map has its real
    height and width (a dynamic size hides maps that are 1 pixel high)."""
    shape = index.shape(spec.name) or ()
    dims = spec.shape()
    if len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]) and shape[1:] == dims[1:]:
        return index
    return graph.GraphIndex(graph.with_input_size(index.model, spec.name, dims))


def _serialized(
    exposed: onnx.ModelProto, index: graph.GraphIndex
) -> tuple[bytes, bytes | None, int | None]:
    """The exposed model's bytes; for a fixed batch, also those of a copy with the batch made
    symbolic (a hypothesis, proven by :func:`_open_session`), and the fixed batch."""
    first = index.shape(index.inputs[0])
    batch_dim = first[0] if first else None
    if not isinstance(batch_dim, int) or batch_dim < 1:
        return exposed.SerializeToString(), None, None
    dynamic, changed = graph.make_batch_dynamic(exposed)
    freed = dynamic.SerializeToString() if changed else None
    del dynamic
    return exposed.SerializeToString(), freed, batch_dim


def _open_session(
    backend: Backend,
    plain: bytes,
    freed: bytes | None,
    batch_dim: int | None,
    spec: InputSpec,
    config: ExplainerConfig,
    notes: list[str],
) -> tuple[Runnable, int | None]:
    """A session over the exposed model, with a free batch dimension where provable."""
    if batch_dim is None:
        return _open(backend, plain, config), None
    if freed is not None:
        try:
            session = _open(backend, freed, config)
            if backend.batch_consistent(session, spec, time_limit=config.time_limit_s):
                return session, None
        except ModelError:
            pass
    notes.append(
        f"the model's batch dimension is fixed to {batch_dim} and could not be freed "
        f"safely; masked passes run {batch_dim} at a time"
    )
    return _open(backend, plain, config), batch_dim


def _open(backend: Backend, model: bytes, config: ExplainerConfig) -> Runnable:
    return backend.open(model, OpenOptions.of(config))


def _labels(
    spec: str | tuple[str, ...] | None, metadata: dict[str, str], notes: list[str]
) -> list[str] | None:
    if isinstance(spec, tuple):
        return list(spec)
    if spec is not None:
        return load_labels(spec)
    try:
        return labels_from_metadata(metadata)
    except LabelError as exc:
        notes.append(f"the model's labels are left out: {exc} (pass --labels FILE)")
        return None
