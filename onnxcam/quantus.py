"""Maps for Quantus (Hedström et al., JMLR 2023): one ``.npz`` that its functional API takes.

Quantus metrics are called as ``metric(model=..., x_batch=..., y_batch=..., a_batch=...,
s_batch=...)``. The file holds, for the images of an evaluation in order:

- ``x_batch``: the model inputs, (N, C, H, W) or (N, H, W, C) float32 as the model takes them;
- ``y_batch``: the evaluated target's class index per image (-1 when it has none), int64;
- ``a_batch_<method>``: each method's maps at input resolution, (N, 1, H, W) float32;
- ``s_batch``: the ground-truth box masks, (N, 1, H, W) uint8, when boxes were given;
- ``methods`` and ``sources``: the method names and the images' sources.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from .errors import ConfigError

__all__ = ["quantus_arrays", "quantus_npz"]


def quantus_arrays(evaluations: Sequence) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` from :class:`onnxcam.evaluate.Evaluation` records (the same
    methods for every image).

    Raises:
        ConfigError: no records, or records without their maps and inputs.
    """
    if not evaluations:
        raise ConfigError("nothing to export: no image was evaluated")
    methods = list(dict.fromkeys(e.method for e in evaluations))
    sources = list(dict.fromkeys(str(e.source) for e in evaluations))
    by_key = {(str(e.source), e.method): e for e in evaluations}
    firsts = [by_key[(s, methods[0])] for s in sources]
    if any(e.x is None or e.saliency is None for e in evaluations):
        raise ConfigError("the evaluation kept no maps or inputs to export")
    arrays: dict[str, np.ndarray] = {
        "x_batch": np.concatenate([e.x for e in firsts]).astype(np.float32),
        "y_batch": np.array(
            [-1 if e.class_index is None else int(e.class_index) for e in firsts], np.int64
        ),
        "methods": np.array(methods),
        "sources": np.array(sources),
    }
    for method in methods:
        maps = [by_key[(s, method)].saliency for s in sources]
        arrays[f"a_batch_{method}"] = np.stack(maps)[:, None].astype(np.float32)
    if all(e.inside is not None for e in firsts):
        arrays["s_batch"] = np.stack([e.inside for e in firsts])[:, None].astype(np.uint8)
    return arrays


def quantus_npz(evaluations: Sequence) -> bytes:
    """:func:`quantus_arrays` as the bytes of a compressed ``.npz``."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **quantus_arrays(evaluations))  # type: ignore[arg-type]
    return buffer.getvalue()
