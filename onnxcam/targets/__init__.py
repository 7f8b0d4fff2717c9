"""Targets: what "the score" of a (masked) input is. One module per kind behind one protocol.

See :mod:`onnxcam.targets.base` for the protocol and :mod:`onnxcam.targets.spec` for the
``KIND[:VALUE][:key=value...]`` grammar.
"""

from __future__ import annotations

from .base import BindContext, OutputInfo, Target, TargetSpec, checked_scores
from .classify import ClassSpec, TopSpec
from .custom import CallableSpec
from .embedding import EmbeddingSpec
from .index import IndexSpec
from .spec import KINDS, TargetLike, load_target_file, parse_target, resolve_targets

__all__ = [
    "KINDS",
    "BindContext",
    "CallableSpec",
    "ClassSpec",
    "EmbeddingSpec",
    "IndexSpec",
    "OutputInfo",
    "Target",
    "TargetLike",
    "TargetSpec",
    "TopSpec",
    "checked_scores",
    "load_target_file",
    "parse_target",
    "resolve_targets",
]
