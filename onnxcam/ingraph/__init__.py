"""Saliency written into the graph: a model that returns its prediction and its explanation in
one call, on any runtime that serves ONNX (``onnxcam export``).

:func:`export` returns a copy of the model with every original output unchanged and two more:
``saliency`` (B, T, h, w) float32 in [0, 1], the map of each of T targets at the explained
node's resolution (or at the input's, ``resize="input"``), and ``saliency_class`` (B, T) int64,
the class of each map, when the classes are chosen per image (``top``, ``top:K``). Each method
computes exactly what onnxcam's own method of that name computes (one module each):

- ``cam`` (:mod:`.cam`): the linear head's weights applied to the feature map;
- ``recipro`` (:mod:`.recipro`): the head copied and run on the B·h·w masked maps;
- ``activation`` (:mod:`.activation`): the mean channel, min-max normalised;
- ``eigencam`` (:mod:`.eigencam`): the first principal component by unrolled power iteration.

:func:`expose` returns a copy with the chosen feature maps as extra outputs and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import onnx

from .. import graph, modelinfo
from ..errors import ConfigError, ModelError, NodeError
from ..graph.index import _copy
from ..layouts import NCHW, GridLayout, TokenLayout
from ..methods.recipro import KERNELS
from ..preprocess import InputSpec
from ..result import version
from . import activation, cam, eigencam, recipro
from .base import Cells, ClassOutput, Site
from .builder import FINISHES, Builder, Classes, all_names, opset_of

__all__ = [
    "CLASS_OUTPUT",
    "EXPORT_METHODS",
    "MIN_OPSET",
    "OUTPUT",
    "RESIZES",
    "export",
    "expose",
    "metadata",
    "parse_target",
]

#: Methods and their in-graph builders; whether each needs a class head.
EXPORT_METHODS: dict[str, tuple[Callable[[Site], Cells], bool]] = {
    "cam": (cam.build, True),
    "recipro": (recipro.build, True),
    "activation": (activation.build, False),
    "eigencam": (eigencam.build, False),
}
OUTPUT = "saliency"
CLASS_OUTPUT = "saliency_class"
RESIZES = ("input",)
#: The oldest default-domain opset the added nodes are written for (Unsqueeze, ReduceSum
#: and Softmax as opset 13 defines them); older models are converted to it.
MIN_OPSET = 13
_META = "onnxcam.export."

ModelLike = str | Path | bytes | onnx.ModelProto


def export(
    model: ModelLike,
    *,
    method: str = "cam",
    node: str = "auto",
    target: str = "top",
    size: tuple[int, int] | None = None,
    resize: str | None = None,
    kernel: str = "onehot",
) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``method``'s saliency maps (see the module).

    Args:
        model: a path, serialized bytes or a ``ModelProto`` (never modified).
        method: ``cam``, ``recipro``, ``activation`` or ``eigencam``.
        node: the feature map: ``auto``, a node or a tensor name (one).
        target: ``top`` (the top class), ``top:K``, ``class=N[,M...]``, or ``all``; any of
            them with ``:output=NAME`` to pick the class output. Class-agnostic methods
            (``activation``, ``eigencam``) make one map per image and take only ``top``.
        size: (H, W) for a model whose input size is dynamic (the input is fixed to it).
        resize: ``"input"``: the maps upsampled to the input size in the graph (bilinear,
            half-pixel centres, as :func:`onnxcam.ops.upsample`); None: feature resolution.
        kernel: Recipro-CAM's mask of each cell: ``onehot`` (that cell alone) or
            ``gaussian`` (a 3×3 Gaussian around it), as ``onnxcam explain --kernel``.

    Raises:
        ConfigError: an unknown method, target or resize; a model or head the method
            cannot serve (one line saying what was found).
        ModelError, NodeError: the model cannot be read, or the node not resolved.
    """
    if method not in EXPORT_METHODS:
        raise ConfigError(f"unknown export method '{method}'; valid: {', '.join(EXPORT_METHODS)}")
    if resize is not None and resize not in RESIZES:
        raise ConfigError(f"unknown resize '{resize}'; valid: {', '.join(RESIZES)}")
    if kernel not in KERNELS:
        raise ConfigError(f"unknown kernel '{kernel}'; valid: {', '.join(KERNELS)}")
    if kernel != "onehot" and method != "recipro":
        raise ConfigError(f"method '{method}' takes no kernel (recipro does)")
    build, class_specific = EXPORT_METHODS[method]
    rule, output_name = parse_target(target)
    if not class_specific and (rule != "top" or output_name is not None):
        raise ConfigError(
            f"method '{method}' makes one class-agnostic map per image; it takes no target "
            f"(got '{target}')"
        )
    proto, index, spec, converted = _sized(model, size)
    _check_free(proto, [OUTPUT] if not class_specific else [OUTPUT, CLASS_OUTPUT])
    candidates = graph.resolve_nodes(index.model, node, index)
    if len(candidates) > 1:
        shown = ",".join(c.label for c in candidates)
        raise ConfigError(f"export explains one node; '{node}' names several ({shown})")
    cand = candidates[0]
    grid, channels = cand.spatial, cand.channels
    if not all(isinstance(d, int) for d in (*grid, channels)):
        raise NodeError(
            f"node '{cand.label}' has shape {graph.fmt_shape(cand.shape)}: export needs its "
            "channels, height and width known (give --size for a model of dynamic size)"
        )
    h, w, k = int(grid[0]), int(grid[1]), int(channels)  # type: ignore[arg-type]
    output = _class_output(index, output_name, method) if class_specific else None
    out = _copy(proto)
    b = Builder(out, opset_of(out))
    feature = _as_nchw(b, cand, method)
    if index.elem_type(cand.tensor) != onnx.TensorProto.FLOAT:
        feature = b.op("Cast", [feature], to=onnx.TensorProto.FLOAT)
    classes = _classes(b, rule, output) if output is not None else None
    site = Site(b, proto, index, cand, feature, (h, w), k, output, classes, kernel)
    cells = build(site)
    assert cells.finish in FINISHES
    size_out = (spec.height, spec.width) if resize == "input" else None
    saliency = b.finish(cells.name, cells.finish, (h, w), size_out)
    batch = _batch_dim(out, spec.name)
    count = classes.count if classes is not None else 1
    b.named("Identity", [saliency], OUTPUT)
    out.graph.output.append(
        onnx.helper.make_tensor_value_info(
            OUTPUT, onnx.TensorProto.FLOAT, [batch, count, *(size_out or (h, w))]
        )
    )
    if classes is not None and classes.chosen is not None:
        b.named("Identity", [classes.chosen], CLASS_OUTPUT)
        out.graph.output.append(
            onnx.helper.make_tensor_value_info(CLASS_OUTPUT, onnx.TensorProto.INT64, [batch, count])
        )
    record = {
        "version": version(),
        "method": method,
        "node": cand.label,
        "tensor": cand.tensor,
        "target": target if class_specific else "none (class-agnostic)",
        "targets": str(count),
        "resolution": "input" if size_out else "feature",
        "shape": json.dumps([batch, count, *(size_out or (h, w))]),
        "opset": str(opset_of(out)) + (f" (converted from {converted})" if converted else ""),
    }
    if output is not None:
        record["class_output"] = output.name
    if classes is not None and classes.fixed is not None:
        record["classes"] = json.dumps(list(classes.fixed))
    if method == "recipro":
        record["kernel"] = kernel
    if method == "eigencam":
        record["power_steps"] = f"{2**eigencam.SQUARINGS} ({eigencam.SQUARINGS} squarings)"
    _set_metadata(out, record)
    _checked(out)
    return out


def expose(
    model: ModelLike, *, node: str = "auto", size: tuple[int, int] | None = None
) -> onnx.ModelProto:
    """A copy of ``model`` with the chosen feature maps (one or several, ``a,b``) as extra
    outputs named as their tensors, and nothing else (for a served predictor that runs
    onnxcam's methods on them).

    Raises:
        ModelError, NodeError, ConfigError: as :func:`export`.
    """
    proto, index, _, _ = _sized(model, size, convert=False)
    candidates = graph.resolve_nodes(index.model, node, index)
    out = proto
    for cand in candidates:
        out = graph.expose(out, cand.tensor, index)
    out = _copy(out) if out is proto else out
    _set_metadata(
        out,
        {
            "version": version(),
            "method": "expose",
            "node": ",".join(c.label for c in candidates),
            "tensor": ",".join(c.tensor for c in candidates),
        },
    )
    _checked(out)
    return out


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    """What :func:`export` recorded in the model (keys without their prefix)."""
    return {p.key[len(_META) :]: p.value for p in model.metadata_props if p.key.startswith(_META)}


def parse_target(target: str) -> tuple[str, str | None]:
    """``target`` checked: its rule (``top``, ``top:K``, ``class=N,...``, ``all``) and the
    output it names (``:output=NAME``), if any.

    Raises:
        ConfigError: anything else.
    """
    rule, _, rest = target.strip().partition(":output=")
    if rest and not rest.strip():
        raise ConfigError(f"target '{target}': ':output=' needs an output name")
    output = rest.strip() or None
    valid = "valid: top, top:K, class=N[,M...], all (each optionally with :output=NAME)"
    if rule in ("top", "all"):
        return rule, output
    if rule.startswith("top:"):
        k = rule[4:]
        if not k.isdigit() or int(k) < 1:
            raise ConfigError(f"target '{target}': K in top:K must be a whole number >= 1")
        return f"top:{int(k)}", output
    if rule.startswith("class="):
        parts = [p.strip() for p in rule[6:].split(",")]
        if not parts or not all(p.isdigit() for p in parts):
            raise ConfigError(f"target '{target}': class=N takes class numbers, e.g. class=3,7")
        return "class=" + ",".join(str(int(p)) for p in parts), output
    raise ConfigError(f"unknown target '{target}'; {valid}")


# ----------------------------------------------------------------------------- the steps


def _sized(
    model: ModelLike, size: tuple[int, int] | None, *, convert: bool = True
) -> tuple[onnx.ModelProto, graph.GraphIndex, InputSpec, int | None]:
    """The model (a copy) with unused inputs dropped, its input size fixed where dynamic or
    asked, converted to :data:`MIN_OPSET` when older; its index and input spec; the opset it
    was converted from (None: not converted)."""
    if isinstance(model, onnx.ModelProto):
        proto = _copy(model)
    else:
        proto = graph.load_model(model if isinstance(model, bytes) else str(model))
    proto, _ = graph.drop_unused_inputs(proto)
    converted = None
    if convert and opset_of(proto) < MIN_OPSET:
        converted = opset_of(proto)
        try:
            proto = onnx.version_converter.convert_version(proto, MIN_OPSET)
        except Exception as exc:
            raise ModelError(
                f"the model's opset {converted} is older than {MIN_OPSET}, which export needs, "
                f"and could not be converted ({type(exc).__name__})"
            ) from None
    index = graph.GraphIndex(proto)
    metadata_ = {p.key: p.value for p in proto.metadata_props}
    spec = modelinfo.input_spec(index, size=size, default_size=modelinfo.metadata_size(metadata_))
    shape = index.shape(spec.name) or ()
    if size is not None or not all(isinstance(d, int) for d in shape[1:]):
        proto = graph.with_input_size(proto, spec.name, spec.shape())
        index = graph.GraphIndex(proto)
    return proto, index, spec, converted


def _as_nchw(b: Builder, cand: graph.Candidate, method: str) -> str:
    """The node's map as ``(B, C, h, w)`` in the graph (a token map's cells cut out of its
    tokens and laid on their grid).

    Raises:
        ConfigError: recipro on a sequence-first token map (its masks are batch first).
    """
    layout = cand.layout
    if isinstance(layout, GridLayout):
        if layout == NCHW:
            return cand.tensor
        return b.op("Transpose", [cand.tensor], perm=list(layout.order))
    assert isinstance(layout, TokenLayout)
    if layout.sequence_first and method == "recipro":
        raise ConfigError(
            f"method 'recipro' cannot be exported on node '{cand.label}': its tokens come "
            "before the batch (sequence first); export another method or a batch-first node"
        )
    tokens = cand.tensor
    if layout.sequence_first:
        tokens = b.op("Transpose", [tokens], perm=[1, 0, 2])
    (h, w), p = layout.hw, layout.prefix
    cells = b.op("Slice", [tokens, b.ints([p]), b.ints([p + h * w]), b.ints([1])], hint="cells")
    grid = b.reshape(cells, [0, h, w, -1])
    return b.op("Transpose", [grid], perm=[0, 3, 1, 2])


def _check_free(model: onnx.ModelProto, names: list[str]) -> None:
    taken = all_names(model.graph)
    clash = [n for n in names if n in taken]
    if clash:
        raise ModelError(
            f"the model already has a tensor named '{clash[0]}', the name of the output export "
            "adds; rename it in the model"
        )


def _class_output(index: graph.GraphIndex, name: str | None, method: str) -> ClassOutput:
    """The output class targets read: the one named, else the only (B, N) output, else the
    only one ending in Softmax/Sigmoid."""
    vectors = {}
    for out in index.outputs:
        shape = index.shape(out)
        if shape and len(shape) >= 2 and all(d == 1 for d in shape[2:]):
            vectors[out] = shape
    if name is not None:
        if name not in vectors:
            raise ConfigError(
                f"method '{method}': '{name}' is not an output of shape (batch, N); the model's "
                f"(batch, N) outputs: {', '.join(vectors) or 'none'}"
            )
        chosen = name
    elif len(vectors) == 1:
        chosen = next(iter(vectors))
    else:
        scored = [n for n in vectors if modelinfo.output_activation(index, n)]
        if not vectors or len(scored) != 1:
            what = ", ".join(f"'{n}' {graph.fmt_shape(s)}" for n, s in vectors.items())
            raise ConfigError(
                f"method '{method}' needs a class output (batch, N): "
                + (f"several could be meant ({what}); add :output=NAME to the target"
                   if vectors else "the model has none (use activation or eigencam)")
            )  # fmt: skip
        chosen = scored[0]
    classes = vectors[chosen][1]
    if not isinstance(classes, int):
        raise ConfigError(f"method '{method}': output '{chosen}' has no fixed number of classes")
    return ClassOutput(chosen, classes, modelinfo.output_activation(index, chosen))


def _classes(b: Builder, rule: str, output: ClassOutput) -> Classes:
    n = output.classes
    if rule == "all":
        return Classes(rule, n)
    if rule.startswith("class="):
        fixed = tuple(int(p) for p in rule[6:].split(","))
        bad = [c for c in fixed if c >= n]
        if bad:
            raise ConfigError(
                f"target class {bad[0]} is out of range; output '{output.name}' has {n} classes "
                f"(0..{n - 1})"
            )
        return Classes(rule, len(fixed), fixed=fixed)
    k = 1 if rule == "top" else int(rule[4:])
    if k > n:
        raise ConfigError(f"target '{rule}' asks for more classes than '{output.name}' has ({n})")
    flat = b.op("Flatten", [output.name], axis=1)
    _, chosen = b.op_n("TopK", [flat, b.ints([k], "k")], 2, "top", axis=1, largest=1, sorted=1)
    return Classes(rule, k, chosen=chosen)


def _batch_dim(model: onnx.ModelProto, name: str) -> int | str:
    value = next(v for v in model.graph.input if v.name == name)
    dim = value.type.tensor_type.shape.dim[0]
    if dim.HasField("dim_value") and dim.dim_value > 0:
        return int(dim.dim_value)
    return dim.dim_param or "batch"


def _set_metadata(model: onnx.ModelProto, record: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if not p.key.startswith(_META)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in record.items():
        model.metadata_props.add(key=_META + key, value=value)


def _checked(model: onnx.ModelProto) -> None:
    """The ONNX checker's full check (with strict shape inference) on the written model.

    Raises:
        ModelError: what the checker said (a bug in export, or a model it cannot extend).
    """
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise ModelError(
            f"the exported model fails the ONNX checker: {first[0][:300] if first else exc}"
        ) from None
