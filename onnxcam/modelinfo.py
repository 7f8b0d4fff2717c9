"""What a model wants and allows: its image input, its head, and how large a batch can be."""

from __future__ import annotations

import math

import numpy as np
import onnx

from . import graph
from .errors import ConfigError, ModelError
from .preprocess import InputSpec
from .runtime import Session

__all__ = [
    "ACTIVATION_BUDGET",
    "CPU_BATCH",
    "CUDA_BATCH",
    "batch_consistent",
    "default_batch",
    "guess_layout",
    "input_spec",
    "output_activation",
]

# Masked passes per run. On CPU the per-image time is flat from about 8 to 64 while memory
# grows linearly (tools/bench.py --sweep, BENCHMARKS.md); a GPU wants larger batches.
CPU_BATCH = 16
CUDA_BATCH = 64
ACTIVATION_BUDGET = 256 * 2**20  # bytes of intermediate tensors per run


def input_spec(
    index: graph.GraphIndex, *, layout: str | None = None, size: tuple[int, int] | None = None
) -> InputSpec:
    """What the model's first input wants: layout, size, channels, dtype.

    Raises:
        ModelError: the input is not a rank-4 numeric image tensor of 1 or 3 channels.
        ConfigError: the size is dynamic and ``size`` was not given.
    """
    if not index.inputs:
        raise ModelError("the model has no graph input")
    name = index.inputs[0]
    shape = index.shape(name)
    elem = index.elem_type(name)
    if shape is None or len(shape) != 4 or elem is None:
        raise ModelError(
            f"model input '{name}' has shape {shape}; an image input of rank 4, "
            "(N, C, H, W) or (N, H, W, C), is needed"
        )
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise ModelError(f"model input '{name}' has type {dtype}; a numeric image tensor is needed")
    layout = layout or guess_layout(index, name, shape)
    c, h, w = (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
    channels = c if isinstance(c, int) else 3
    if channels not in (1, 3):
        raise ModelError(
            f"model input '{name}' has {channels} channels in layout {layout} (shape {shape}); "
            "an image input takes 1 or 3 (use --layout if the layout was guessed wrong)"
        )
    if size is not None:
        height, width = size
    elif isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        height, width = h, w
    else:
        raise ConfigError(
            f"model input '{name}' has a dynamic size {shape}; pass --size HEIGHT WIDTH "
            "(e.g. --size 224 224)"
        )
    return InputSpec(name, layout, height, width, channels, dtype)


def guess_layout(index: graph.GraphIndex, name: str, shape: tuple[graph.Dim, ...]) -> str:
    for j in index.consumers.get(name, []):
        node = index.nodes[j]
        if node.op_type == "Transpose" and graph.transpose_perm(node) == [0, 3, 1, 2]:
            return "NHWC"
    if shape[3] in (1, 3) and shape[1] not in (1, 3):
        return "NHWC"
    return "NCHW"


_SHAPE_ONLY = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose")
_ACTIVATIONS = {"Softmax": "softmax", "Sigmoid": "sigmoid"}


def output_activation(index: graph.GraphIndex, output: str) -> str | None:
    """``"softmax"`` or ``"sigmoid"`` when the output is produced by one (looking through
    shape-only ops that exporters put after it), else None."""
    i = index.producer.get(output)
    while i is not None and index.nodes[i].op_type in _SHAPE_ONLY:
        i = index.producer.get(index.nodes[i].input[0])
    return _ACTIVATIONS.get(index.nodes[i].op_type) if i is not None else None


def default_batch(index: graph.GraphIndex, spec: InputSpec, provider: str) -> int:
    """The device's batch, capped so a run's intermediate tensors fit ACTIVATION_BUDGET.

    Per image, a run holds roughly three tensors of the largest intermediate size at once
    (an op's input and output, plus a skip connection), in the model's element size.
    """
    wanted = CUDA_BATCH if provider == "CUDAExecutionProvider" else CPU_BATCH
    largest = spec.height * spec.width * spec.channels
    for value in index.values.values():
        dims = graph._dims(value) or ()
        sizes = [d for d in dims[1:] if isinstance(d, int) and d > 0]
        if len(dims) > 1 and len(sizes) == len(dims) - 1:
            largest = max(largest, math.prod(sizes))
    per_image = 3 * largest * 4
    return max(1, min(wanted, ACTIVATION_BUDGET // per_image))


def batch_consistent(session: Session, spec: InputSpec) -> bool:
    """Prove a freed batch dimension: a batch of two equals two single runs."""
    rng = np.random.default_rng(0)
    shape = (1, spec.channels, spec.height, spec.width)
    if spec.layout == "NHWC":
        shape = (1, spec.height, spec.width, spec.channels)
    a = rng.uniform(-1, 1, shape).astype(spec.dtype)
    b = rng.uniform(-1, 1, shape).astype(spec.dtype)
    if np.issubdtype(spec.dtype, np.integer):
        a = rng.integers(0, 256, shape).astype(spec.dtype)
        b = rng.integers(0, 256, shape).astype(spec.dtype)
    try:
        both = session.run(np.concatenate([a, b]))
        single = [session.run(a), session.run(b)]
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
