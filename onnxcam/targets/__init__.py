"""Targets: what "the score" of a (masked) input is. One module per kind behind one protocol.

See :mod:`onnxcam.targets.base` for the protocol and :mod:`onnxcam.targets.spec` for the
``KIND[:VALUE][:key=value...]`` grammar.
"""

from __future__ import annotations

from .auto import AutoSpec
from .base import BindContext, OutputInfo, Target, TargetSpec, checked_scores
from .classify import ClassSpec, TopSpec
from .custom import CallableSpec
from .detection import DetectionSpec
from .embedding import EmbeddingSpec
from .index import IndexSpec
from .segmentation import SegmentationSpec
from .spec import KINDS, TargetLike, load_target_file, parse_target, resolve_targets

__all__ = [
    "KINDS",
    "AutoSpec",
    "BindContext",
    "CallableSpec",
    "ClassSpec",
    "DetectionSpec",
    "EmbeddingSpec",
    "IndexSpec",
    "OutputInfo",
    "SegmentationSpec",
    "Target",
    "TargetLike",
    "TargetSpec",
    "TopSpec",
    "checked_scores",
    "load_target_file",
    "parse_target",
    "resolve_targets",
]
