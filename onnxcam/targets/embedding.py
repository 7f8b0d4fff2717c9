"""Embedding targets: ``embedding[:ref=IMAGE|VECTOR.npy][:output=NAME]``.

For embedding models (re-identification, retrieval, CLIP-style image towers) with a
``(B, D)`` or ``(B, D, 1, 1)`` output ``e``, the score is the cosine similarity to a
reference ``r``::

    f(x) = <e(x), r> / (|e(x)| · |r|)        (0 when either vector is zero)

``r`` is the embedding of another image (``ref=IMAGE``, embedded by the same model with the
same preprocessing), a stored vector (``ref=VECTOR.npy``, loaded without pickle), or by
default the clean image's own embedding, so the map shows what keeps the embedding where it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import ConfigError, OnnxCamError
from .base import (
    BindContext,
    Key,
    Outputs,
    OutputTarget,
    Target,
    TargetSpec,
    as_vectors,
    pick_output,
)

__all__ = ["EmbeddingSpec", "EmbeddingTarget", "cosine"]


def cosine(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of (B, D) to (D,), in float64; 0 for a zero vector."""
    rows = vectors.astype(np.float64)
    ref = reference.astype(np.float64)
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(ref)
    dots = rows @ ref
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


@dataclass(frozen=True)
class EmbeddingTarget(OutputTarget):
    """Cosine similarity of one output to a fixed reference vector."""

    reference: np.ndarray

    def __call__(self, outputs: Outputs) -> np.ndarray:
        value = outputs[self.output]
        return cosine(value.reshape(value.shape[0], -1), self.reference)


def _load_vector(path: str, dim: int) -> np.ndarray:
    try:
        vector = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(
            f"cannot read reference vector {path}: {exc} (a .npy file of {dim} numbers)"
        ) from None
    if not np.issubdtype(vector.dtype, np.number) or vector.size != dim:
        raise ConfigError(
            f"reference vector {path} holds {vector.size} values of type {vector.dtype}; "
            f"the model's embedding has {dim} numbers"
        )
    vector = vector.reshape(dim).astype(np.float64)
    if not np.isfinite(vector).all():
        raise ConfigError(f"reference vector {path} contains NaN or Inf")
    return vector


@dataclass(frozen=True)
class EmbeddingSpec(TargetSpec):
    """``embedding[:ref=IMAGE|VECTOR.npy][:output=NAME]``."""

    ref: str | None = None
    output: str | None = None

    kind: ClassVar[str] = "embedding"
    keys: ClassVar[dict[str, Key]] = {
        "ref": Key(str, "an image file or a .npy vector"),
        "output": Key(str, "an output name of the model"),
    }

    def bind(self, ctx: BindContext, clean: Outputs) -> list[Target]:
        name = pick_output(ctx, clean, self.output, kind=self.kind)
        own = as_vectors(clean[name])
        if own is None:
            raise ConfigError(
                f"target '{self.spec}': output '{name}' has shape {tuple(clean[name].shape)}; "
                "an embedding target needs (batch, D) or (batch, D, 1, 1)"
            )
        dim = own.shape[1]
        if self.ref is None:
            reference = own[0].astype(np.float64)
        elif Path(self.ref).suffix.lower() == ".npy":
            reference = _load_vector(self.ref, dim)
        else:
            try:
                other = ctx.embed(self.ref)[name]
            except OnnxCamError as exc:
                raise ConfigError(f"cannot use ref={self.ref}: {exc}") from None
            reference = other.reshape(-1).astype(np.float64)
        score = float(cosine(own, reference)[0])
        shown = "itself" if self.ref is None else Path(self.ref).name
        record = {
            "kind": self.kind,
            "spec": self.spec,
            "output": name,
            "class_index": None,
            "label": None,
            "score": score,
            "reference": self.ref,
            "summary": f"embedding cosine {score:.3f} to {shown}",
        }
        return [EmbeddingTarget(name, record, reference)]
