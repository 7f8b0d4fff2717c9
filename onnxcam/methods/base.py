"""What every method is: it plans the model passes it needs and turns their scores into a map.

A method sees one image after its activation pass (:class:`Clean`) and answers with a
:class:`Plan`: how many model inputs it wants scored and how to build them, chunk by chunk.
The runner scores those inputs for every target of the image at once; the method then gets
one target's scores and combines them into a map at the model's input resolution. A method
never sees a target, so any target kind works with any method, and several targets share one
plan. A method that needs no passes (a map read from the activations alone) plans zero inputs.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from ..preprocess import InputSpec, Normalization

__all__ = ["Clean", "Method", "Plan", "TargetMap", "fuse_nodes", "no_inputs"]


@dataclass(frozen=True)
class Clean:
    """One image as a method may use it.

    Attributes:
        x: the preprocessed input, (1, C, H, W) or (1, H, W, C), the model's dtype.
        rgb: the image, RGB uint8 (H0, W0, 3), before resizing; None when the caller gave
            a model input without one.
        acts: the node's activations, channels first: (K, h, w) float32.
        spec: the model input's layout, size and dtype.
        norm: the normalisation that made ``x`` from pixels.
        groups: when ``acts`` stacks the channels of several nodes, how many each gave, in
            order; empty for one node. A method that turns channels into a map makes one map
            per node and fuses them (:func:`fuse_nodes`).
    """

    x: np.ndarray
    rgb: np.ndarray | None
    acts: np.ndarray
    spec: InputSpec
    norm: Normalization
    groups: tuple[int, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the model input: the resolution of every map."""
        return (self.spec.height, self.spec.width)


def fuse_nodes(clean: Clean, one: Callable[[slice], np.ndarray]) -> np.ndarray:
    """The map of several nodes: ``one(channels)`` for each node's slice of channels (a map
    whose maximum is 1, or all zero), averaged over the nodes and scaled to a maximum of 1.

    With one node this is ``one`` of every channel. Each node counts equally whatever the
    scale of its activations, so a coarse map with large values cannot drown a fine one; where
    only some nodes' maps agree, the fused map is lower. (Stacking every channel into one sum
    instead let the largest activations win: on the shipped detector it put the maximum
    inside the object's box less often; see README, "Which node".)
    """
    if len(clean.groups) < 2:
        return one(slice(None))
    edges = np.cumsum((0, *clean.groups))
    maps = [one(slice(int(a), int(b))) for a, b in itertools.pairwise(edges)]
    fused = np.stack(maps).mean(axis=0, dtype=np.float64)
    peak = float(fused.max(initial=0.0))
    if peak <= 0.0 or not np.isfinite(peak):
        return np.zeros(fused.shape, np.float32)
    return (fused / peak).astype(np.float32)


def no_inputs(chunk: int) -> Iterator[np.ndarray]:
    """The input stream of a plan that needs no passes."""
    return iter(())


@dataclass(frozen=True)
class Plan:
    """The passes one image needs.

    Attributes:
        count: the number of model inputs to score.
        inputs: ``inputs(chunk)`` yields them, at most ``chunk`` rows at a time (see
            :class:`onnxcam.runner.Job`).
        stats: counts for the record (e.g. channels used and skipped, masked passes).
        state: whatever the method needs again in :meth:`Method.combine`.
        budget_s: seconds the passes may take; they run in the order ``inputs`` yields them
            until the time is spent (``combine`` then gets the scores of a prefix).
        required: how many first inputs run whatever the budget.
    """

    count: int
    inputs: Callable[[int], Iterator[np.ndarray]] = no_inputs
    stats: Mapping[str, int] = field(default_factory=dict)
    state: Any = None
    budget_s: float | None = None
    required: int = 0


@dataclass(frozen=True)
class TargetMap:
    """One target's map, float32 (H, W) at input resolution in [0, 1], and what the method
    has to say about it for the record (e.g. how much of a budget bought)."""

    map: np.ndarray
    info: Mapping[str, Any] = field(default_factory=dict)


class Method(ABC):
    """A saliency method. Subclasses set ``name`` and implement ``plan`` and ``combine``.

    Attributes:
        name: the name in the registry and in the record.
        score_kind: what a class target scores when its ``prob`` is ``auto``:
            ``"probability"`` or ``"logit"``.
        class_specific: whether the map depends on the target at all.
    """

    name: ClassVar[str]
    score_kind: str = "probability"
    class_specific: ClassVar[bool] = True

    @abstractmethod
    def plan(self, clean: Clean) -> Plan:
        """The model inputs to score for this image (shared by all its targets)."""

    @abstractmethod
    def combine(
        self, clean: Clean, plan: Plan, scores: np.ndarray, clean_score: float
    ) -> TargetMap:
        """One target's map (float32 (H, W) at input resolution, in [0, 1], never NaN).

        Args:
            clean: the image.
            plan: this image's plan.
            scores: the target's score of each planned input that ran: (plan.count,), or a
                prefix when a budget stopped the passes early.
            clean_score: the target's score of the clean image.
        """

    @classmethod
    def from_settings(cls, *, options: Any, baseline: str, budget_s: float | None) -> Method:
        """Build from the explainer's settings. A method without settings refuses any that
        differ from the defaults rather than ignore them (a time budget means nothing to a
        method that runs no passes, so it is accepted)."""
        if options != type(options)() or baseline != "none":
            raise ConfigError(
                f"method '{cls.name}' takes no Score-CAM options (compat, channels, baseline)"
            )
        return cls()

    def options(self) -> dict[str, Any]:
        """The method's settings, for the record."""
        return {}
