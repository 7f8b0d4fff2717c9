"""Score-CAM (Wang et al., CVPR-W 2020, https://arxiv.org/abs/1910.01279)::

    M_k = minmax(Up(A_k))                    # one mask per channel, in [0, 1]
    s_k = f(x ⊙ M_k) - f(X_b)                # score of the masked input, minus a baseline
    L   = ReLU(Σ_k s_k · Up(A_k)) / max(...)  # at input resolution

``Up`` is bilinear interpolation with half-pixel centres unless ``align_corners`` is set.
Constant channels carry no location and are skipped exactly; channels whose masks are equal
run once; fast modes keep the top-N channels by spatial std (Faster Score-CAM) or maximum
(CSKIP). ``COMPAT`` holds the option bundles that reproduce other libraries' Score-CAM.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from .. import ops, preprocess
from ..errors import ConfigError
from .base import Clean, Method, Options, Plan, TargetMap, fuse_nodes, knob

__all__ = [
    "BASELINES",
    "COMPAT",
    "RANKS",
    "SCORES",
    "ScoreCam",
    "ScoreCamOptions",
    "channel_weights",
    "combine",
    "distinct_channels",
    "fidelity",
    "iter_masks",
    "top_channels",
]

SCORES = ("probability", "logit", "logit_delta")
RANKS = ("std", "max")
BASELINES = ("none", "zero", "black", "blur")


@dataclass(frozen=True)
class ScoreCamOptions(Options):
    """The knobs on which Score-CAM implementations differ (see ``COMPAT`` for bundles).

    Attributes:
        score: ``"probability"`` (softmax of the output, unless it already is one),
            ``"logit"`` (the raw output) or ``"logit_delta"`` (raw output minus the clean
            image's). Applies to class targets whose ``prob`` is ``auto``.
        channel_softmax: replace the channel scores by their softmax across channels.
        align_corners: upsample masks with corner-aligned bilinear interpolation.
        normalize_first: min-max each channel at feature resolution, then upsample it.
        mask_eps: added to the mask min-max denominator.
        skip_constant: give constant channels weight 0 without running them; otherwise they
            are scored as the all-zero mask (as libraries that do not skip them do).
        combine_at: ``"input"``: ``ReLU(Up(Σ w_k A_k))`` divided by its max; ``"feature"``:
            ``minmax(ReLU(Σ w_k A_k))`` at feature resolution, then upsampled.
        cam_eps: added to the min-max denominators of the ``"feature"`` combination.
        renormalize: min-max the upsampled ``"feature"`` combination once more.
        top_channels: run only the N non-constant channels ranked highest by ``rank`` (fast
            mode; the others get weight 0). None runs every channel (exact).
        rank: ``"std"`` (spatial standard deviation: Faster Score-CAM, tf-keras-vis
            ``max_N``) or ``"max"`` (channel maximum: CSKIP).
    """

    score: str = knob("probability", choices=SCORES)
    channel_softmax: bool = False
    align_corners: bool = False
    normalize_first: bool = False
    mask_eps: float = knob(0.0, minimum=0.0)
    skip_constant: bool = True
    combine_at: str = knob("input", choices=ops.COMBINE_AT)
    cam_eps: float = knob(0.0, minimum=0.0)
    renormalize: bool = False
    top_channels: int | None = knob(
        None,
        flag="--channels",
        minimum=1,
        help="fast mode: score only the top N channels",
    )
    rank: str = knob(
        "std",
        flag="--rank",
        choices=RANKS,
        help="fast-mode ranking: spatial std (Faster Score-CAM) or max (CSKIP)",
    )


#: Named bundles that reproduce other implementations' maps.
COMPAT: dict[str, ScoreCamOptions] = {
    # haofanwang/Score-CAM: softmax probability, masks and combination at input resolution,
    # constant channels skipped. The final map is divided by its max.
    "official": ScoreCamOptions(),
    # pytorch-grad-cam ScoreCAM: raw logit, align_corners=True masks with eps 1e-8, softmax
    # across channels, ReLU and min-max (eps 1e-7) at feature resolution, cv2.resize, min-max.
    "grad-cam": ScoreCamOptions(
        score="logit",
        channel_softmax=True,
        align_corners=True,
        mask_eps=1e-8,
        skip_constant=False,
        combine_at="feature",
        cam_eps=1e-7,
        renormalize=True,
    ),
    # torchcam ScoreCAM: per-channel min-max (eps 1e-8) at feature resolution, then
    # align_corners=False upsampling; logit minus clean logit, softmax across channels; ReLU
    # and min-max (eps 1e-8) at feature resolution; upsampled without renormalising.
    "torchcam": ScoreCamOptions(
        score="logit_delta",
        channel_softmax=True,
        normalize_first=True,
        mask_eps=1e-8,
        skip_constant=False,
        combine_at="feature",
        cam_eps=1e-8,
    ),
}


def distinct_channels(
    acts: np.ndarray, *, eps: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort channels into constant ones and groups that give the same mask.

    Two channels give the same mask when their min-max normalised maps are equal (for
    example exact copies), so each group needs one masked pass.

    Args:
        acts: (K, h, w) activations.
        eps: the mask denominator's eps (with eps > 0 only exact copies are merged).

    Returns:
        ``(constant, representatives, owner)``: a boolean (K,) mask of constant channels;
        the indices of the channels to run, one per distinct mask; and for every channel
        the position in ``representatives`` whose score it takes (-1 for constant ones).
    """
    k = acts.shape[0]
    flat = acts.reshape(k, -1)
    constant = flat.max(axis=1) == flat.min(axis=1)
    normalized = ops.minmax(acts, eps=eps).reshape(k, -1)
    owner = np.full(k, -1, np.int64)
    seen: dict[bytes, int] = {}
    reps: list[int] = []
    for i in np.flatnonzero(~constant):
        key = normalized[i].tobytes()
        if key not in seen:
            seen[key] = len(reps)
            reps.append(int(i))
        owner[i] = seen[key]
    return constant, np.asarray(reps, np.int64), owner


def top_channels(acts: np.ndarray, n: int, rank: str = "std") -> np.ndarray:
    """Boolean (K,) mask of the ``n`` non-constant channels with the largest spatial std
    (``rank="std"``) or maximum (``rank="max"``); ties go to the lower index."""
    flat = acts.reshape(acts.shape[0], -1).astype(np.float64)
    key = flat.std(axis=1) if rank == "std" else flat.max(axis=1)
    constant = flat.max(axis=1) == flat.min(axis=1)
    key = np.where(constant, -np.inf, key)
    order = np.argsort(-key, kind="stable")
    keep = np.zeros(acts.shape[0], bool)
    keep[order[: min(n, int((~constant).sum()))]] = True
    return keep


def top_channels_per_node(
    acts: np.ndarray, groups: tuple[int, ...], n: int, rank: str = "std"
) -> np.ndarray:
    """:func:`top_channels` with the ``n`` shared equally among several nodes (``groups``:
    each node's channel count; the first nodes get the remainder), so that every node's map,
    fused with the others' as equals, is estimated from as many channels."""
    if len(groups) < 2:
        return top_channels(acts, n, rank)
    keep = np.zeros(acts.shape[0], bool)
    start = 0
    for i, count in enumerate(groups):
        quota = n // len(groups) + int(i < n % len(groups))
        if quota:
            keep[start : start + count] = top_channels(acts[start : start + count], quota, rank)
        start += count
    return keep


def best_first(spread: np.ndarray, channels: np.ndarray, groups: tuple[int, ...]) -> np.ndarray:
    """The order an anytime run takes its masks in: largest ``spread`` first; with several
    nodes (``groups``: each node's channel count) the nodes take turns, each in its own
    best-first order, so a budget that stops early leaves every node's map as well estimated
    as the others'. ``channels`` are the masks' channel indices."""
    order = np.argsort(-spread, kind="stable")
    if len(groups) < 2:
        return order
    node = np.searchsorted(np.cumsum(groups), channels[order], side="right")
    turn = np.zeros(len(order), np.int64)
    for n in np.unique(node):
        turn[node == n] = np.arange(int((node == n).sum()))
    return order[np.lexsort((node, turn))]


def iter_masks(
    acts: np.ndarray,
    channels: np.ndarray,
    size: tuple[int, int],
    chunk: int,
    options: ScoreCamOptions,
) -> Iterator[np.ndarray]:
    """Masks M_k for the given channels, ``chunk`` at a time, as (n, H, W) float32 arrays.

    Only one chunk of upsampled maps exists at any time, whatever K is.
    """
    for start in range(0, len(channels), chunk):
        part = acts[channels[start : start + chunk]]
        if options.normalize_first:
            masks = ops.upsample(
                ops.minmax(part, eps=options.mask_eps), size, align_corners=options.align_corners
            )
        else:
            masks = ops.minmax(
                ops.upsample(part, size, align_corners=options.align_corners),
                eps=options.mask_eps,
            )
        yield masks


def channel_weights(
    scores: np.ndarray, baseline: float, *, channel_softmax: bool = False
) -> np.ndarray:
    """``s_k = f(X_k) - f(X_b)``, or their softmax across channels."""
    weights = scores.astype(np.float64) - baseline
    if channel_softmax:
        shifted = np.exp(weights - weights.max(initial=-np.inf))
        weights = shifted / shifted.sum()
    return weights


def combine(
    acts: np.ndarray, weights: np.ndarray, size: tuple[int, int], options: ScoreCamOptions
) -> np.ndarray:
    """The saliency map from activations (K, h, w) and channel weights (K,), (H, W) in [0, 1]
    (:func:`onnxcam.ops.saliency_map` of ``Σ_k w_k A_k``). An all-zero map stays all zero.
    """
    summed = np.tensordot(weights.astype(np.float64), acts.astype(np.float64), axes=1)
    return ops.saliency_map(
        summed, size, at=options.combine_at, eps=options.cam_eps, renormalize=options.renormalize
    )


@dataclass(frozen=True)
class _Channels:
    """Which channels of one image run, and how their scores become weights."""

    reps: np.ndarray  # channel run for each distinct mask, in the order they run
    owner: np.ndarray  # per channel: index into reps, -1 when not run
    active: np.ndarray  # per channel: gets a weight
    constant: np.ndarray  # per channel: constant map
    baseline: bool  # the plan's first input is the baseline X_b
    blank: bool  # the next one is the all-zero mask (constant channels that count)


#: Channels whose mean weight stands in for the channels a budget left out (see fidelity).
FIDELITY_WINDOW = 16


def fidelity(acts: np.ndarray, channels: _Channels, weights: np.ndarray, ran: int) -> float:
    """How well the map of the first ``ran`` masks should correlate with the exact map.

    With ``G_r`` the sum of the channels that share mask ``r`` (in run order) and ``w_r`` its
    weight, the map after ``c`` masks is ``S_c = Σ_{r≤c} w_r G_r`` and the channels not run
    sum to ``T_c = Σ_{r>c} G_r``. Supposing they would weigh ``ŵ_c``, the mean weight of the
    first ``min(c, 16)`` masks, the exact map would be ``S_c + ŵ_c T_c``, so
    ``e_c = corr(ReLU(S_c), ReLU(S_c + ŵ_c T_c))`` (at feature resolution). The estimate is
    ``max_{c≤ran} e_c``: it never falls when more masks run (it depends only on the prefix),
    and it is 1 when every mask ran. Measured against the exact maps of the shipped photos it
    errs low (BENCHMARKS.md).
    """
    n = len(channels.reps)
    if ran >= n:
        return 1.0
    k = acts.shape[0]
    flat = acts.reshape(k, -1).astype(np.float64)
    groups = np.zeros((n, flat.shape[1]))
    counted = channels.owner >= 0
    np.add.at(groups, channels.owner[counted], flat[counted])
    rep_weight = np.zeros(n)
    rep_weight[channels.owner[counted]] = weights[counted]
    done = rep_weight[:ran, None] * groups[:ran]
    s = np.cumsum(done, axis=0)
    rest = groups.sum(axis=0)[None] - np.cumsum(groups[:ran], axis=0)
    c = np.arange(1, ran + 1)
    stand_in = (np.cumsum(rep_weight[:ran]) / c)[np.minimum(c, FIDELITY_WINDOW) - 1]
    estimate = _corr_rows(np.maximum(s, 0.0), np.maximum(s + stand_in[:, None] * rest, 0.0))
    return float(np.max(estimate, initial=0.0))


def _corr_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``; 1 where either
    row is constant (adding a constant changes no map)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norms = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.divide((a * b).sum(axis=1), norms, out=np.ones(len(a)), where=norms > 0)


class ScoreCam(Method):
    """Score-CAM with the options of :class:`ScoreCamOptions` and a baseline.

    Args:
        options: the variant (``COMPAT`` has the named ones).
        baseline: ``none`` (f(X_b) = 0, as in the authors' code), ``zero`` (zeros in input
            space), ``black`` (a preprocessed black image) or ``blur`` (the blurred input).
        budget_s: anytime Score-CAM: masks run best first (largest spatial std first, as
            the fast modes rank them; several nodes take turns, :func:`best_first`) until
            this many seconds are spent; the map is the
            weighted sum of the channels that ran, and :func:`fidelity` estimates how close
            it is to the exact one.

    Subclasses that score every mask several times, perturbed (SS-CAM, IS-CAM), set
    :meth:`repeats` and :meth:`perturb`; a channel's score is then the mean over its repeats.
    """

    name = "scorecam"
    takes_baseline = True
    takes_budget = True
    options_type = ScoreCamOptions
    presets: ClassVar[Mapping[str, ScoreCamOptions]] = COMPAT

    def __init__(
        self,
        options: ScoreCamOptions | None = None,
        *,
        baseline: str = "none",
        budget_s: float | None = None,
    ) -> None:
        super().__init__(options, baseline=baseline)
        if baseline not in BASELINES:
            raise ConfigError(f"unknown baseline '{baseline}'; valid: {', '.join(BASELINES)}")
        if self.settings.score == "logit_delta" and baseline != "none":
            raise ConfigError(
                "score 'logit_delta' already subtracts the clean image's score; use baseline 'none'"
            )
        if budget_s is not None and not budget_s > 0:
            raise ConfigError(f"the time budget must be positive seconds, got {budget_s}")
        if budget_s is not None and self.repeats() > 1:
            raise ConfigError(f"method '{self.name}' takes no time budget; scorecam does")
        self.budget_s = budget_s
        self.score_kind = "probability" if self.settings.score == "probability" else "logit"

    @classmethod
    def from_settings(cls, *, options: Any, baseline: str, budget_s: float | None) -> ScoreCam:
        return cls(options, baseline=baseline, budget_s=budget_s)

    def options(self) -> dict[str, Any]:
        extra = {} if self.budget_s is None else {"budget_s": self.budget_s}
        return {**super().options(), **extra}

    def compat(self) -> str:
        """The preset the options come from (fast-mode settings aside), or ``custom``."""
        core = replace(self.settings, top_channels=None, rank="std")
        return next((name for name, preset in self.presets.items() if preset == core), "custom")

    def repeats(self) -> int:
        """How many times every mask is scored."""
        return 1

    def perturb(self, masks: np.ndarray, repeat: int, rng: np.random.Generator) -> np.ndarray:
        """Mask ``repeat`` of the masks (n, H, W); ``rng`` is that repeat's own generator,
        drawn from in mask order (so the masks do not depend on the chunk size)."""
        return masks

    def _generator(self, repeat: int) -> np.random.Generator:
        return np.random.default_rng(repeat)

    def plan(self, clean: Clean) -> Plan:
        options, acts = self.settings, clean.acts
        constant, reps, owner = distinct_channels(acts, eps=options.mask_eps)
        selected = np.ones(acts.shape[0], bool)
        if options.top_channels is not None:
            selected = top_channels_per_node(acts, clean.groups, options.top_channels, options.rank)
        run = selected & ~constant
        groups = np.unique(owner[run])
        if self.budget_s is not None:  # best first: the order the fast modes rank by
            spread = acts[reps[groups]].reshape(len(groups), -1).std(axis=1)
            groups = groups[best_first(spread, reps[groups], clean.groups)]
        remap = np.full(len(reps) + 1, -1, np.int64)  # the last entry maps owner -1 to -1
        remap[groups] = np.arange(len(groups))
        owner = np.where(run, remap[owner], -1)
        active = run if options.skip_constant else selected
        # Every constant channel that counts gives the same all-zero mask: one pass for all.
        blank = bool((active & constant).any())
        base = preprocess.baseline_tensor(self.baseline, clean.x, clean.spec, clean.norm)
        channels = _Channels(reps[groups], owner, active, constant, base is not None, blank)
        extra = [base] if base is not None else []
        repeats = self.repeats()

        def inputs(chunk: int) -> Iterator[np.ndarray]:
            yield from extra
            for repeat in range(repeats):
                rng = self._generator(repeat)
                if blank:
                    nothing = np.zeros((1, *clean.size), np.float32)
                    yield ops.apply_masks(clean.x, self.perturb(nothing, repeat, rng), layout)
                for masks in iter_masks(acts, channels.reps, clean.size, chunk, options):
                    yield ops.apply_masks(clean.x, self.perturb(masks, repeat, rng), layout)

        layout = clean.spec.layout
        k = acts.shape[0]
        used = int(active.sum())
        skipped = int((constant & ~active).sum())
        per_repeat = len(channels.reps) + int(blank)
        stats = {
            "channels_total": int(k),
            "channels_used": used,
            "channels_skipped": skipped,
            "channels_dropped": int(k - used - skipped),
            "masked_passes": per_repeat * repeats,
        }
        count = len(extra) + per_repeat * repeats
        required = len(extra) + int(blank) + min(1, len(channels.reps))
        return Plan(count, inputs, stats, channels, budget_s=self.budget_s, required=required)

    def combine(
        self, clean: Clean, plan: Plan, scores: np.ndarray, clean_score: float
    ) -> TargetMap:
        channels: _Channels = plan.state
        first = 0
        base_score = clean_score if self.settings.score == "logit_delta" else 0.0
        if channels.baseline:
            base_score, first = float(scores[0]), 1
        masked = scores[first:]
        repeats = self.repeats()
        if repeats > 1:  # the mean over every repeat of each mask
            masked = masked.reshape(repeats, -1).mean(axis=0)
        k = clean.acts.shape[0]
        channel_scores = np.zeros(k)
        if channels.blank:
            channel_scores[channels.active & channels.constant] = masked[0]
            masked = masked[1:]
        ran = channels.owner >= 0
        ran &= channels.owner < len(masked)  # a budget may have stopped before the rest
        channel_scores[ran] = masked[channels.owner[ran]]
        active = channels.active & (ran | channels.constant)
        weights = np.zeros(k)
        if active.any():
            weights[active] = channel_weights(
                channel_scores[active],
                base_score,
                channel_softmax=self.settings.channel_softmax,
            )
        cam = fuse_nodes(
            clean, lambda ch: combine(clean.acts[ch], weights[ch], clean.size, self.settings)
        ).astype(np.float32)
        if plan.budget_s is None:
            return TargetMap(cam)
        info: dict[str, Any] = {"masks_run": len(masked), "masks_planned": len(channels.reps)}
        if not self.settings.channel_softmax:
            info["fidelity_estimate"] = fidelity(clean.acts, channels, weights, len(masked))
        return TargetMap(cam, info)
