"""What every method is: it plans the model passes it needs and turns their scores into a map.

A method sees one image after its activation pass (:class:`Clean`) and answers with a
:class:`Plan`: how many inputs it wants scored and how to build them, chunk by chunk. Its
``space`` says what they are: model inputs (``"input"``: masked images), feature maps for the
head that follows the explained node (``"head"``: the head alone runs), or feature vectors for
a global-average-pooling + linear head read from the graph (``"linear"``: numpy, no pass). The
runner scores those inputs for every target of the image at once; the method then gets one
target's scores and combines them into a map at the model's input resolution. A method never
sees a target, so any target kind works with any method, and several targets share one plan.
A method that needs no passes (a map read from the activations alone) plans zero inputs.

A method's settings are a frozen dataclass (:class:`Options`); fields that users set carry
their command-line flag and valid range (:func:`knob`), which :mod:`onnxcam.config` checks.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from .. import ops
from ..errors import ConfigError
from ..preprocess import InputSpec, Normalization

__all__ = [
    "GRAD_CAM_MAP",
    "AllTargets",
    "Clean",
    "MapOptions",
    "Method",
    "Options",
    "Plan",
    "TargetMap",
    "fuse_nodes",
    "knob",
    "no_inputs",
    "sum_masks",
]


@dataclass(frozen=True)
class Clean:
    """One image as a method may use it.

    Attributes:
        x: the preprocessed input, (1, C, H, W) or (1, H, W, C), the model's dtype.
        rgb: the image, RGB uint8 (H0, W0, 3), before resizing; None when the caller gave
            a model input without one.
        acts: the node's activations, channels first: (K, h, w) float32 (several nodes:
            their channels stacked on the finest grid).
        spec: the model input's layout, size and dtype.
        norm: the normalisation that made ``x`` from pixels.
        groups: when ``acts`` stacks the channels of several nodes, how many each gave, in
            order; empty for one node. A method that turns channels into a map makes one map
            per node and fuses them (:func:`fuse_nodes`).
        features: each node's own activations, (K_i, h_i, w_i) float32, in node order (what
            a head plan perturbs); ``(acts,)`` when not given.
        map_size: the resolution of the maps when not the input's: ``acts``' grid (h, w)
            gives each method's map before upsampling (what ``onnxcam export`` writes).
    """

    x: np.ndarray
    rgb: np.ndarray | None
    acts: np.ndarray
    spec: InputSpec
    norm: Normalization
    groups: tuple[int, ...] = ()
    features: tuple[np.ndarray, ...] = ()
    map_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.features:
            object.__setattr__(self, "features", (self.acts,))

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of every map: the model input's, unless ``map_size`` says otherwise."""
        return self.map_size or (self.spec.height, self.spec.width)


def fuse_nodes(clean: Clean, one: Callable[[slice], np.ndarray]) -> np.ndarray:
    """The map of several nodes: ``one(channels)`` for each node's slice of channels (a map
    whose maximum is 1, or all zero), averaged over the nodes and scaled to a maximum of 1.

    With one node this is ``one`` of every channel. Each node counts equally whatever the
    scale of its activations, so a coarse map with large values cannot drown a fine one; where
    only some nodes' maps agree, the fused map is lower. (Stacking every channel into one sum
    instead, ``--fuse sum``, lets the largest activations win: on the shipped detector it puts
    the maximum inside the object's box less often; see README, "Which node". Under that rule
    ``groups`` is empty and this is ``one`` of every channel.)
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
        count: the number of inputs to score.
        inputs: ``inputs(chunk)`` yields them, at most ``chunk`` rows at a time (see
            :class:`onnxcam.runner.Job`), as the method's ``space`` wants them: model
            inputs; for ``"head"`` a tuple of each node's (n, K_i, h_i, w_i) channels-first
            feature maps per block; for ``"linear"`` (n, K) feature vectors.
        stats: counts for the record (e.g. channels used and skipped, masked passes).
        state: whatever the method needs again in :meth:`Method.combine`.
        budget_s: seconds the passes may take; they run in the order ``inputs`` yields them
            until the time is spent (``combine`` then gets the scores of a prefix).
        required: how many first inputs run whatever the budget.
    """

    count: int
    inputs: Callable[[int], Iterator[Any]] = no_inputs
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


def knob(
    default: Any,
    *,
    flag: str | None = None,
    help: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A field of a method's :class:`Options` with what :func:`onnxcam.config.check_options`
    checks: at least ``minimum``, at most ``maximum``, greater than ``above``, one of
    ``choices``; ``flag`` is the command-line option that sets it (None: presets only)."""
    checks = {"minimum": minimum, "maximum": maximum, "above": above, "choices": choices}
    meta = {"flag": flag, "help": help, **{k: v for k, v in checks.items() if v is not None}}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Options:
    """A method's settings: a frozen dataclass of :func:`knob` fields (none here)."""


@dataclass(frozen=True)
class MapOptions(Options):
    """How a score per feature-map cell (a weighted sum of channels) becomes the map; see
    :func:`onnxcam.ops.saliency_map` (``at`` is ``combine_at``, ``eps`` is ``cam_eps``)."""

    combine_at: str = knob("input", choices=ops.COMBINE_AT)
    relu: bool = True
    cam_eps: float = knob(0.0, minimum=0.0)
    renormalize: bool = False

    def to_map(self, summed: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return ops.saliency_map(
            summed,
            size,
            at=self.combine_at,
            relu=self.relu,
            eps=self.cam_eps,
            renormalize=self.renormalize,
        )


#: pytorch-grad-cam's maps: ReLU, ``scale_cam_image`` (min-max, eps 1e-7) at feature
#: resolution, ``cv2.resize``, then ``scale_cam_image`` once more.
GRAD_CAM_MAP: dict[str, Any] = {"combine_at": "feature", "cam_eps": 1e-7, "renormalize": True}


class Method(ABC):
    """A saliency method. Subclasses set ``name`` and implement ``plan`` and ``combine``.

    Attributes:
        name: the name in the registry and in the record.
        score_kind: what a class target scores when its ``prob`` is ``auto``:
            ``"probability"`` or ``"logit"``.
        detection_mode: how a detection target left at its default mode scores an object.
        class_specific: whether the map depends on the target at all.
        takes_budget: whether a time budget (``budget_s``) means something to it.
        takes_baseline: whether ``baseline`` (the score subtracted from every masked score)
            means anything to the method.
        space: where its passes run: ``"input"`` (the model), ``"head"`` (the model after
            the node), ``"linear"`` (a pooling + linear head in numpy) or ``"none"``.
        options_type: the class of the method's settings.
        presets: named settings (``--compat``); ``official`` is the default.
    """

    name: ClassVar[str]
    score_kind: str = "probability"
    detection_mode: ClassVar[str] = "iou"
    class_specific: ClassVar[bool] = True
    takes_baseline: ClassVar[bool] = False
    takes_budget: ClassVar[bool] = False
    space: ClassVar[str] = "input"
    options_type: ClassVar[type] = Options
    presets: ClassVar[Mapping[str, Any]] = {"official": Options()}

    def __init__(self, options: Any = None, *, baseline: str = "none") -> None:
        self.settings = self.presets["official"] if options is None else options
        self.baseline = baseline

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

    def combine_many(
        self, clean: Clean, plan: Plan, scores: np.ndarray, clean_scores: list[float]
    ) -> list[TargetMap]:
        """Every target's map from scores (n, targets); one :meth:`combine` each unless a
        method shares work between targets."""
        return [
            self.combine(clean, plan, scores[:, i], clean_scores[i]) for i in range(scores.shape[1])
        ]

    @classmethod
    def from_settings(cls, *, options: Any, baseline: str, budget_s: float | None) -> Method:
        """Build from the explainer's settings (checked by :func:`onnxcam.config.validate`).

        Raises:
            ConfigError: a time budget, which this method would not honour.
        """
        if budget_s is not None and not cls.takes_budget:
            raise ConfigError(f"method '{cls.name}' takes no time budget (--budget); scorecam does")
        return cls(options, baseline=baseline)

    def compat(self) -> str:
        """The preset the settings come from, or ``custom``."""
        return next((n for n, p in self.presets.items() if p == self.settings), "custom")

    def options(self) -> dict[str, Any]:
        """The method's settings, for the record (the preset's name when there are several)."""
        named = {"compat": self.compat()} if len(self.presets) > 1 else {}
        extra = {"baseline": self.baseline} if self.takes_baseline else {}
        return {**named, **asdict(self.settings), **extra}


class AllTargets(Method):
    """A method that makes every target's map at once from the same masks (added up once for
    all targets): subclasses implement :meth:`combine_many`."""

    def combine(
        self, clean: Clean, plan: Plan, scores: np.ndarray, clean_score: float
    ) -> TargetMap:
        return self.combine_many(clean, plan, scores[:, None], [clean_score])[0]

    @abstractmethod
    def combine_many(
        self, clean: Clean, plan: Plan, scores: np.ndarray, clean_scores: list[float]
    ) -> list[TargetMap]: ...


def sum_masks(masks: Iterator[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """``Σ_i w_i M_i`` for every column of ``weights`` (n, T): (T, H, W) float64, with the
    masks (n in all, (m, H, W) per block) regenerated a block at a time, never all held."""
    total: np.ndarray | None = None
    start = 0
    for block in masks:
        part = np.tensordot(weights[start : start + len(block)].T, block, axes=1)
        total = part if total is None else total + part
        start += len(block)
    if total is None:
        raise ValueError("sum_masks needs at least one mask")
    return total
