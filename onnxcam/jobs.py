"""From a clean pass to the runner's work: targets bound to the image, the method's plan, and
the scoring job that runs the planned passes (on the model, or on its head fed feature maps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .activation import Forward
from .methods import Clean, Method, Plan
from .prepare import Prepared
from .preprocess import Normalization
from .runner import Feed, Job, JobResult, Stage
from .targets import BindContext, Target, checked_scores
from .targets.base import TargetSpec

__all__ = [
    "Bound",
    "bind_targets",
    "clean_view",
    "head_feeds",
    "passes_job",
    "planned",
    "scores",
    "scoring_job",
]


@dataclass(frozen=True)
class Bound:
    """One image ready for its passes: its targets, their clean scores, the method's plan."""

    fwd: Forward
    clean: Clean
    targets: list[Target]
    clean_scores: list[float]
    plan: Plan
    method: Method


def bind_targets(
    fwd: Forward,
    specs: Sequence[TargetSpec],
    *,
    prepared: Prepared,
    method: Method,
    score_kind: str | None,
    embed: Callable[[str], Mapping[str, np.ndarray]],
) -> list[Target]:
    """The targets ``specs`` mean for this image, bound to its clean outputs.

    Args:
        fwd: the image's clean pass.
        specs: the targets asked for.
        prepared: the model (its outputs, labels and metadata).
        method: what it scores and how it scores detections.
        score_kind: what class targets with ``prob=auto`` score (default: the method's).
        embed: the clean outputs of a reference image (for embedding targets).
    """
    ctx = BindContext(
        outputs=prepared.outputs,
        labels=prepared.labels,
        score_kind=score_kind or method.score_kind,
        embed=embed,
        input_hw=(fwd.spec.height, fwd.spec.width),
        geometry=fwd.geometry,
        metadata=prepared.metadata,
        detection_mode=method.detection_mode,
    )
    return [bound for spec in specs for bound in spec.bind(ctx, fwd.outputs)]


def clean_view(fwd: Forward, norm: Normalization, *, at: str = "input") -> Clean:
    """The image as a method sees it; its maps at the input's resolution, or with ``at``
    ``"feature"`` at the feature map's (before upsampling)."""
    size = fwd.acts.shape[1:] if at == "feature" else None
    return Clean(
        fwd.x, fwd.rgb, fwd.acts, fwd.spec, norm, groups=fwd.groups, features=fwd.features,
        map_size=None if size is None else (int(size[0]), int(size[1])),
    )  # fmt: skip


def planned(
    fwd: Forward, targets: Sequence[Target], method: Method, norm: Normalization, *,
    at: str = "input",
) -> Bound:  # fmt: skip
    """The targets' clean scores and ``method``'s plan for the image (maps at ``at``, see
    :func:`clean_view`)."""
    clean_scores = [float(checked_scores(t, fwd.outputs, 1)[0]) for t in targets]
    clean = clean_view(fwd, norm, at=at)
    return Bound(fwd, clean, list(targets), clean_scores, method.plan(clean), method)


def scoring_job(
    targets: Sequence[Target],
    count: int,
    inputs: Any,
    *,
    budget_s: float | None = None,
    required: int = 0,
    stage: Stage | None = None,
) -> Job:
    """A job that keeps the targets' scores of ``count`` rows, (count, len(targets))."""
    outputs = tuple(dict.fromkeys(name for t in targets for name in t.outputs))

    def keep(out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = next(iter(out.values())).shape[0]
        return {"scores": np.stack([checked_scores(t, out, rows) for t in targets], axis=1)}

    what = "masked inputs" if stage is None else "perturbed feature maps"
    return Job(
        count, inputs, outputs, keep, budget_s, required,
        what=what,
        hint="the clean image scores finitely, so the preprocessing is not the cause: the "
        f"model breaks on {what}; try another --node or --baseline",
        stage=stage,
    )  # fmt: skip


def passes_job(bound: Bound, *, stage: Stage | None, prepared: Prepared) -> Job:
    """The image's planned passes, on the model or on ``stage``; a budget counts the time the
    activation pass took."""
    plan, fwd = bound.plan, bound.fwd
    budget = None
    if plan.budget_s is not None:
        budget = max(0.0, plan.budget_s - fwd.preprocess_s - fwd.activation_s)
    inputs = plan.inputs
    if bound.method.space == "head":
        inputs = head_feeds(fwd, plan.inputs, prepared)
    return scoring_job(
        bound.targets, plan.count, inputs, budget_s=budget, required=plan.required, stage=stage
    )


def head_feeds(fwd: Forward, inputs: Any, prepared: Prepared) -> Any:
    """A head plan's blocks (each node's (n, K, h, w) maps) as the head's named inputs:
    maps in their node's layout, and the clean values of what else the head reads."""
    head = prepared.head
    assert head is not None  # the head's stage has been opened
    cands = prepared.candidates

    def feeds(chunk: int) -> Iterator[Feed]:
        for block in inputs(chunk):
            n = len(block[0])
            feed = {}
            for cand, maps, clean in zip(cands, block, fwd.raw, strict=True):
                shaped = cand.layout.from_chw(maps, clean)
                feed[head.feeds[cand.tensor]] = np.ascontiguousarray(shaped, np.float32)
            for name in head.side:
                feed[head.feeds[name]] = np.repeat(fwd.side[name], n, axis=0)
            yield feed

    return feeds


def scores(outcome: JobResult, targets: int) -> np.ndarray:
    """A scoring job's scores, (rows, targets); no rows when none ran."""
    return outcome.values.get("scores", np.zeros((0, targets)))
