"""What a model wants and allows: its image input, its head, and how large a batch can be."""

from __future__ import annotations

import ast
import math

import numpy as np
import onnx

from . import graph
from .errors import ConfigError, ImageError, ModelError
from .layouts import INPUT_NCHW, INPUT_NHWC, input_axes
from .modelkind import ModelKind, model_kind
from .preprocess import InputSpec
from .runner import Runnable

__all__ = [
    "ACTIVATION_BUDGET",
    "CPU_BATCH",
    "CUDA_BATCH",
    "ModelKind",
    "batch_cap",
    "batch_consistent",
    "guess_layout",
    "in_graph_scaling",
    "input_spec",
    "metadata_size",
    "model_kind",
    "output_activation",
    "tensor_spec",
]

# Masked passes per run. On CPU the per-image time is flat from about 8 to 64 while memory
# grows linearly (tools/bench.py --sweep, BENCHMARKS.md); a GPU wants larger batches.
MAX_SIDE = 16_384  # pixels a side of a model input (larger sizes are corrupt or hostile)
CPU_BATCH = 16
CUDA_BATCH = 64
ACTIVATION_BUDGET = 256 * 2**20  # bytes of intermediate tensors per run


def input_spec(
    index: graph.GraphIndex,
    *,
    layout: str | None = None,
    size: tuple[int, int] | None = None,
    default_size: tuple[int, int] | None = None,
) -> InputSpec:
    """What the model's first input wants: layout, size, channels, dtype.

    Args:
        index: the model.
        layout: ``NCHW`` or ``NHWC`` instead of the guess.
        size: (height, width) instead of the model's own.
        default_size: (height, width) when the model's own size is dynamic (e.g. from its
            metadata).

    Raises:
        ModelError: the input is not a rank-4 numeric image tensor of 1 or 3 channels, or
            the model has other inputs that nothing feeds.
        ConfigError: the size is dynamic and neither ``size`` nor ``default_size`` was given.
    """
    if not index.inputs:
        raise ModelError("the model has no graph input")
    name = index.inputs[0]
    if len(index.inputs) > 1:
        others = ", ".join(
            f"'{n}' {graph.fmt_shape(index.shape(n) or ())}" for n in index.inputs[1:]
        )
        raise ModelError(
            f"the model has inputs besides the image input '{name}' that nothing would feed: "
            f"{others}; re-export it with those values stored in the graph (as initializers or "
            "constants, e.g. tf2onnx or torch.onnx with constant folding)"
        )
    shape = index.shape(name)
    elem = index.elem_type(name)
    if shape is None or len(shape) != 4 or elem is None:
        raise ModelError(
            f"model input '{name}' has shape {shape}; an image input of rank 4, "
            "(N, C, H, W) or (N, H, W, C), is needed"
        )
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    except (KeyError, ValueError, TypeError):
        raise ModelError(
            f"model input '{name}' has element type {elem}, which is no numeric ONNX type; a "
            "float or integer image tensor is needed"
        ) from None
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise ModelError(f"model input '{name}' has type {dtype}; a numeric image tensor is needed")
    layout = layout or guess_layout(index, name, shape)
    c, h, w = (shape[axis] for axis in input_axes(layout))
    channels = c if isinstance(c, int) else 3
    if channels not in (1, 3):
        raise ModelError(
            f"model input '{name}' has {channels} channels in layout {layout} (shape {shape}); "
            "an image input takes 1 or 3 (use --layout if the layout was guessed wrong)"
        )
    if size is not None:
        height, width = size
        if max(size) > MAX_SIDE:
            raise ConfigError(f"size {size[0]}x{size[1]} is above {MAX_SIDE} pixels a side")
    elif isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        if max(h, w) > MAX_SIDE:
            raise ModelError(
                f"model input '{name}' is {h}×{w} pixels; onnxcam takes inputs up to {MAX_SIDE} "
                "pixels a side"
            )
        height, width = h, w
    elif default_size is not None:
        height, width = default_size
    else:
        raise ConfigError(
            f"model input '{name}' has a dynamic size {graph.fmt_shape(shape)}; pass "
            "--size HxW (e.g. --size 224x224; API: size=(224, 224))"
        )
    return InputSpec(name, layout, height, width, channels, dtype)


def tensor_spec(x: np.ndarray, spec: InputSpec, *, dynamic_size: bool) -> InputSpec:
    """The spec of a caller's model input: the model's, with the tensor's height and width
    when the model takes any size.

    Raises:
        ImageError: the tensor's rank, batch, channels, size or dtype do not fit the input,
            or it holds NaN or Inf.
    """
    dims = spec.shape()
    c_axis, *hw = input_axes(spec.layout)
    wanted = "(1, C, H, W)" if c_axis == 1 else "(1, H, W, C)"
    size = "any H, W" if dynamic_size else f"H, W = {spec.height}, {spec.width}"
    fits = x.ndim == 4 and x.shape[0] == 1 and x.dtype == spec.dtype
    if fits:
        fits = x.shape[c_axis] == spec.channels and (
            dynamic_size or tuple(x.shape[a] for a in hw) == (spec.height, spec.width)
        )
    if not fits:
        raise ImageError(
            f"tensor of shape {tuple(x.shape)} and dtype {x.dtype} does not fit model input "
            f"'{spec.name}', which takes {wanted} {spec.dtype} with C = {spec.channels} and "
            f"{size} (e.g. {dims}); Explainer.preprocess(image) makes one"
        )
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ImageError("tensor contains NaN or Inf")
    h, w = (x.shape[a] for a in hw)
    return InputSpec(spec.name, spec.layout, int(h), int(w), spec.channels, spec.dtype)


def metadata_size(metadata: dict[str, str]) -> tuple[int, int] | None:
    """The input size a model's metadata states: Ultralytics ``imgsz`` (``[640, 640]`` or
    ``640``), read as a literal, never evaluated."""
    text = metadata.get("imgsz")
    if text is None:
        return None
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, int):
        value = [value, value]
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and 0 < v <= 16384 for v in value)
    ):
        return int(value[0]), int(value[1])
    return None


def in_graph_scaling(index: graph.GraphIndex) -> str | None:
    """How the graph rescales raw pixels itself, e.g. ``Mul by 0.003922``, or None.

    Keras ``Rescaling`` layers and many exports start with ``x * (1/255)`` or ``x / 255``
    (or ``/ 127.5``) on the input; such a model wants pixels in 0..255.
    """
    for node in index.nodes:
        data = [name for name in node.input if name in index.input_copies]
        if (
            node.op_type not in ("Mul", "Div")
            or not data
            or node.output[0] not in index.input_copies
        ):
            continue
        other = next((n for n in node.input if n and n not in index.input_copies), None)
        value = index.constant(other) if other else None
        if value is None or value.size == 0 or not np.all(np.isfinite(value)):
            continue
        scale = value.astype(np.float64).reshape(-1)
        if node.op_type == "Div":
            scale = 1.0 / scale
        if np.all((scale > 0) & (scale <= 1 / 127.0 + 1e-6)):
            shown = ", ".join(f"{v:.6g}" for v in np.unique(np.round(scale, 6))[:3])
            where = f"{node.op_type} '{node.name or node.output[0]}'"
            return f"it multiplies its input by {shown} ({where})"
    return None


def guess_layout(index: graph.GraphIndex, name: str, shape: tuple[graph.Dim, ...]) -> str:
    for j in index.consumers.get(name, []):
        node = index.nodes[j]
        if node.op_type == "Transpose" and graph.transpose_perm(node) == [0, 3, 1, 2]:
            return INPUT_NHWC
    if shape[3] in (1, 3) and shape[1] not in (1, 3):
        return INPUT_NHWC
    return INPUT_NCHW


_SHAPE_ONLY = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose")
_ACTIVATIONS = {"Softmax": "softmax", "Sigmoid": "sigmoid"}


def output_activation(index: graph.GraphIndex, output: str) -> str | None:
    """``"softmax"`` or ``"sigmoid"`` when the output is produced by one (looking through
    shape-only ops that exporters put after it), else None."""
    i = index.producer.get(output)
    while i is not None and index.nodes[i].op_type in _SHAPE_ONLY:
        i = index.producer.get(index.nodes[i].input[0])
    return _ACTIVATIONS.get(index.nodes[i].op_type) if i is not None else None


def batch_cap(index: graph.GraphIndex, spec: InputSpec, wanted: int) -> int:
    """``wanted``, capped so a run's intermediate tensors fit ACTIVATION_BUDGET.

    Per image, a run holds roughly three tensors of the largest intermediate size at once
    (an op's input and output, plus a skip connection), in the model's element size.
    """
    largest = spec.height * spec.width * spec.channels
    for value in index.values.values():
        dims = graph._dims(value) or ()
        sizes = [d for d in dims[1:] if isinstance(d, int) and d > 0]
        if len(dims) > 1 and len(sizes) == len(dims) - 1:
            largest = max(largest, math.prod(sizes))
    per_image = 3 * largest * 4
    return max(1, min(wanted, ACTIVATION_BUDGET // per_image))


def batch_consistent(
    session: Runnable, spec: InputSpec, *, time_limit: float | None = None
) -> bool:
    """Prove a freed batch dimension: a batch of two equals two single runs (each run within
    ``time_limit`` seconds, so a model that never finishes cannot hang the probe)."""
    rng = np.random.default_rng(0)
    shape = spec.shape()
    a = rng.uniform(-1, 1, shape).astype(spec.dtype)
    b = rng.uniform(-1, 1, shape).astype(spec.dtype)
    if np.issubdtype(spec.dtype, np.integer):
        a = rng.integers(0, 256, shape).astype(spec.dtype)
        b = rng.integers(0, 256, shape).astype(spec.dtype)
    try:
        both = session.run(np.concatenate([a, b]), time_limit=time_limit)
        single = [session.run(a, time_limit=time_limit), session.run(b, time_limit=time_limit)]
    except Exception:
        return False
    for name, value in both.items():
        expected = np.concatenate([single[0][name], single[1][name]])
        if value.shape != expected.shape:
            return False
        tol = 1e-4 * max(1.0, float(np.abs(expected).max(initial=0.0)))
        if not np.allclose(value, expected, rtol=1e-3, atol=tol):
            return False
    return True
