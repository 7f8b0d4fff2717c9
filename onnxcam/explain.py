"""Orchestration: the ``Explainer`` (model, node and session, built once) and its ``Result``."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx

from . import graph, modelinfo, preprocess, scorecam
from .errors import ConfigError, ModelError, OnnxCamError, OutputError
from .labels import labels_from_metadata, load_labels
from .preprocess import Normalization
from .runtime import Session, installed_runtimes
from .scorecam import COMPAT, ScoreCamOptions
from .targets import ClassifierTarget, class_scores, is_distribution, softmax

__all__ = ["BASELINES", "Explainer", "ExplainerConfig", "Forward", "Result", "version"]

BASELINES = ("none", "zero", "black", "blur")
PRESET_KEY = "onnxcam.preset"


def version() -> str:
    """The installed onnxcam version."""
    import importlib.metadata

    try:
        return importlib.metadata.version("onnxcam")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class ExplainerConfig:
    """Everything needed to rebuild an Explainer in another process (plain, picklable data)."""

    model: str
    node: str = "auto"
    preset: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float | None = None
    bgr: bool | None = None
    size: tuple[int, int] | None = None
    layout: str | None = None
    baseline: str = "none"
    batch_size: int | None = None
    threads: int | None = None
    device: str = "auto"
    labels: str | tuple[str, ...] | None = None
    max_pixels: int = preprocess.DEFAULT_MAX_PIXELS
    options: ScoreCamOptions = field(default_factory=ScoreCamOptions)
    fp16: bool = False


@dataclass(frozen=True)
class Result:
    """One explanation.

    ``saliency`` is float32 (H, W) in [0, 1] at the image's own size; ``saliency_input`` is
    the same map at the model's input size, before that last resize.
    """

    saliency: np.ndarray
    saliency_input: np.ndarray
    image: np.ndarray
    class_index: int
    label: str | None
    score: float
    top5: tuple[tuple[int, str | None, float], ...]
    model: str
    node: str
    tensor: str
    channels_total: int
    channels_used: int
    channels_skipped: int
    masked_passes: int
    provider: str
    timings: dict[str, float]
    options: dict[str, Any]
    source: str | None = None
    notes: tuple[str, ...] = ()
    method: str = "scorecam"
    channels_dropped: int = 0

    def to_record(self) -> dict[str, Any]:
        """The JSON record of SPEC §5 (no arrays)."""
        return {
            "source": self.source,
            "model": self.model,
            "node": self.node,
            "tensor": self.tensor,
            "class_index": self.class_index,
            "label": self.label,
            "score": self.score,
            "top5": [{"index": i, "label": lbl, "score": s} for i, lbl, s in self.top5],
            "method": self.method,
            "options": self.options,
            "channels_total": self.channels_total,
            "channels_used": self.channels_used,
            "channels_skipped": self.channels_skipped,
            "channels_dropped": self.channels_dropped,
            "masked_passes": self.masked_passes,
            "provider": self.provider,
            "timings": self.timings,
            "image_size": [int(self.image.shape[1]), int(self.image.shape[0])],
            "notes": list(self.notes),
            "onnxcam_version": version(),
        }

    def save(self, out_dir: str | Path, *, stem: str | None = None, alpha: float = 0.5) -> dict:
        """Write overlay PNG, saliency PNG, ``.npy`` map and JSON record; return their paths."""
        from .render import save_result

        name = stem or (Path(self.source).stem if self.source else "image")
        return save_result(self, Path(out_dir), name, alpha=alpha)


@dataclass(frozen=True)
class Forward:
    """One image through preprocessing and the activation pass."""

    source: str | None
    rgb: np.ndarray
    x: np.ndarray
    outputs: dict[str, np.ndarray]
    probs: np.ndarray
    is_probability: bool
    class_index: int
    acts: np.ndarray
    preprocess_s: float
    activation_s: float


@dataclass(frozen=True)
class _Plan:
    """One image's masked passes: channels to run and how scores become weights."""

    fwd: Forward
    score: ClassifierTarget
    reps: np.ndarray  # channel run for each distinct mask
    owner: np.ndarray  # per channel: index into reps, -1 when not run
    active: np.ndarray  # per channel: gets a weight
    constant: np.ndarray  # per channel: constant map
    base_score: float
    blank_score: float | None  # score of the all-zero mask, when constant channels count


def _rebatch(chunks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Regroup a stream of (n_i, ...) arrays into batches of ``size`` rows (last one short)."""
    pending: list[np.ndarray] = []
    count = 0
    for block in chunks:
        while len(block):
            take = min(size - count, len(block))
            pending.append(block[:take])
            count += take
            block = block[take:]
            if count == size:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, count = [], 0
    if count:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


class Explainer:
    """Explains a classifier's decisions with Score-CAM; the session is built once.

    Args:
        model: path to the ``.onnx`` file (never modified).
        node: ``auto``, a node name, or an output tensor name.
        preset: ``imagenet``, ``caffe``, ``tf``, ``unit`` or ``raw``; default: the model's
            ``onnxcam.preset`` metadata, else ``imagenet``.
        mean, std, scale, bgr: override parts of the preset.
        size: (height, width) when the model's input size is not static.
        layout: ``NCHW`` or ``NHWC`` to override detection.
        baseline: ``none``, ``zero``, ``black`` or ``blur`` (SPEC §2 step 5).
        batch_size: masked passes per run (default: from the model and a memory budget).
        threads: CPU threads for ONNX Runtime.
        device: ``auto``, ``cpu`` or ``cuda``.
        labels: a labels file or a sequence of names (default: the model's metadata).
        max_pixels: refuse images with more pixels than this.
        options: the Score-CAM variant (see :class:`ScoreCamOptions`).
        compat: ``official`` (default), ``grad-cam`` or ``torchcam``: a named bundle of
            options reproducing that implementation's maps (exclusive with ``options``).
        fp16: run the model in float16 (inputs and outputs stay float32); meant for CUDA.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        node: str = "auto",
        preset: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        scale: float | None = None,
        bgr: bool | None = None,
        size: tuple[int, int] | None = None,
        layout: str | None = None,
        baseline: str = "none",
        batch_size: int | None = None,
        threads: int | None = None,
        device: str = "auto",
        labels: str | Path | Sequence[str] | None = None,
        max_pixels: int = preprocess.DEFAULT_MAX_PIXELS,
        options: ScoreCamOptions | None = None,
        compat: str | None = None,
        fp16: bool = False,
    ) -> None:
        if compat is not None:
            if options is not None:
                raise ConfigError("pass either compat or options, not both")
            if compat not in COMPAT:
                raise ConfigError(f"unknown compat '{compat}'; valid: {', '.join(COMPAT)}")
            options = COMPAT[compat]
        label_spec: str | tuple[str, ...] | None
        if labels is None or isinstance(labels, (str, Path)):
            label_spec = None if labels is None else str(labels)
        else:
            label_spec = tuple(labels)
        config = ExplainerConfig(
            model=str(model),
            node=node,
            preset=preset,
            mean=None if mean is None else tuple(float(v) for v in mean),
            std=None if std is None else tuple(float(v) for v in std),
            scale=scale,
            bgr=bgr,
            size=None if size is None else (int(size[0]), int(size[1])),
            layout=layout,
            baseline=baseline,
            batch_size=batch_size,
            threads=threads,
            device=device,
            labels=label_spec,
            max_pixels=max_pixels,
            options=options or ScoreCamOptions(),
            fp16=fp16,
        )
        self._build(config)

    @classmethod
    def from_config(cls, config: ExplainerConfig) -> Explainer:
        """Rebuild from a config, e.g. in a worker process."""
        self = cls.__new__(cls)
        self._build(config)
        return self

    def __reduce__(self) -> tuple[Any, tuple[ExplainerConfig]]:
        # Sessions do not pickle; the config is enough to rebuild everything.
        return (Explainer.from_config, (self.config,))

    def _build(self, config: ExplainerConfig) -> None:
        _validate(config)
        self.config = config
        self.notes: list[str] = []
        runtimes = installed_runtimes()
        if len(runtimes) > 1:
            self.notes.append(
                f"several ONNX Runtime builds are installed ({', '.join(runtimes)}); they "
                "overwrite each other's files: keep one (pip uninstall the others, reinstall it)"
            )
        model = graph.load_model(config.model)
        index = graph.GraphIndex(model)
        self.metadata = {p.key: p.value for p in model.metadata_props}
        self.norm = _normalization(config, self.metadata)
        self.spec = modelinfo.input_spec(index, layout=config.layout, size=config.size)
        self.candidate = graph.resolve_node(model, config.node, index)
        self.class_output = index.outputs[0]
        self._ends_in_softmax = modelinfo.ends_in_softmax(index, self.class_output)
        if config.fp16:
            half = graph.to_float16(model)
            exposed, self.feature_output = graph.expose_float32(half, self.candidate.tensor)
        else:
            exposed = graph.expose(model, self.candidate.tensor, index)
            self.feature_output = self.candidate.tensor
        self.session, self.max_batch = self._open_session(exposed, index)
        self._default_batch = modelinfo.default_batch(index, self.spec, self.provider)
        self.labels = _labels(config.labels, self.metadata)

    def _open_session(
        self, exposed: onnx.ModelProto, index: graph.GraphIndex
    ) -> tuple[Session, int | None]:
        """A session over the exposed model, with a free batch dimension where provable."""
        first = index.shape(index.inputs[0])
        batch_dim = first[0] if first else None
        if not isinstance(batch_dim, int):
            return self._session(exposed), None
        dynamic, changed = graph.make_batch_dynamic(exposed)
        if changed:
            try:
                session = self._session(dynamic)
                if modelinfo.batch_consistent(session, self.spec):
                    return session, None
            except ModelError:
                pass
        self.notes.append(
            f"the model's batch dimension is fixed to {batch_dim} and could not be freed "
            f"safely; masked passes run {batch_dim} at a time"
        )
        return self._session(exposed), batch_dim

    def _session(self, model: onnx.ModelProto) -> Session:
        return Session(
            model.SerializeToString(), device=self.config.device, threads=self.config.threads
        )

    @property
    def provider(self) -> str:
        return self.session.info.provider

    def batch_size(self) -> int:
        """Masked passes per run: the user's choice, capped by what the model allows."""
        wanted = self.config.batch_size or self._default_batch
        return max(1, min(wanted, self.max_batch or wanted))

    def forward(self, image: str | Path | np.ndarray, *, target: int | None = None) -> Forward:
        """Read and preprocess the image and run the activation pass (no masked passes)."""
        t0 = time.perf_counter()
        if isinstance(image, (str, Path)):
            source: str | None = str(image)
            rgb = preprocess.read_image(image, max_pixels=self.config.max_pixels)
        else:
            source = None
            rgb = preprocess.as_rgb(image)
        x = preprocess.to_tensor(rgb, self.spec, self.norm)
        t_pre = time.perf_counter()
        feature = self.feature_output
        out = self.session.run(x, [self.class_output, feature])
        logits = class_scores(out[self.class_output], self.class_output)
        is_prob = self._ends_in_softmax or is_distribution(logits)
        probs = logits.astype(np.float64) if is_prob else softmax(logits)
        n_classes = probs.shape[1]
        if target is None:
            class_index = int(np.argmax(probs[0]))
        elif not 0 <= int(target) < n_classes:
            raise ConfigError(
                f"target class {target} is out of range; the model has {n_classes} classes "
                f"(0..{n_classes - 1})"
            )
        else:
            class_index = int(target)
        acts = _channels_first(out[feature][0], self.candidate.layout).astype(np.float32)
        return Forward(
            source=source,
            rgb=rgb,
            x=x,
            outputs=out,
            probs=probs,
            is_probability=is_prob,
            class_index=class_index,
            acts=acts,
            preprocess_s=t_pre - t0,
            activation_s=time.perf_counter() - t_pre,
        )

    def target(self, forward: Forward, kind: str = "probability") -> ClassifierTarget:
        """The score function of ``forward``'s class: ``probability`` or ``logit``."""
        return ClassifierTarget(
            self.class_output, forward.class_index, kind, forward.is_probability
        )

    def explain(self, image: str | Path | np.ndarray, *, target: int | None = None) -> Result:
        """Explain one image (a path, or an RGB array) for ``target`` (default: top class)."""
        return self.explain_forward(self.forward(image, target=target))

    def explain_forward(self, fwd: Forward) -> Result:
        """Score-CAM for an image that has been through :meth:`forward`."""
        return self._explain_plans([self._plan(fwd)])[0]

    def explain_many(
        self,
        images: Iterable[str | Path | np.ndarray],
        *,
        target: int | None = None,
        group: int = 4,
    ) -> Iterator[tuple[str | Path | np.ndarray, Result | OnnxCamError]]:
        """Explain several images, packing their masked passes into shared batches.

        Images are taken ``group`` at a time; a bad image does not stop the others.

        Yields:
            ``(image, result)`` in input order, where ``result`` is the :class:`Result` or
            the image's :class:`OnnxCamError` (configuration and output errors still raise).
        """
        pending = list(images)
        for start in range(0, len(pending), max(1, group)):
            chunk = pending[start : start + max(1, group)]
            outcomes: list[Result | OnnxCamError | None] = []
            plans = []
            for image in chunk:
                try:
                    plans.append(self._plan(self.forward(image, target=target)))
                    outcomes.append(None)
                except ConfigError:
                    raise
                except OnnxCamError as exc:
                    outcomes.append(exc)
            results = iter(self._explain_packed(plans))
            for image, outcome in zip(chunk, outcomes, strict=True):
                yield image, outcome if outcome is not None else next(results)

    def _explain_packed(self, plans: list[_Plan]) -> list[Result | OnnxCamError]:
        """Shared batches for all plans; if they fail, each image alone, to find the bad one."""
        if not plans:
            return []
        try:
            return list(self._explain_plans(plans))
        except (ConfigError, OutputError):
            raise
        except OnnxCamError as exc:
            if len(plans) == 1:
                return [exc]
        outcomes: list[Result | OnnxCamError] = []
        for plan in plans:
            try:
                outcomes.append(self._explain_plans([plan])[0])
            except (ConfigError, OutputError):
                raise
            except OnnxCamError as exc:
                outcomes.append(exc)
        return outcomes

    def _plan(self, fwd: Forward) -> _Plan:
        """Which channels need a masked pass, and what each score is measured against."""
        options = self.config.options
        acts = fwd.acts
        score = self.target(fwd, "probability" if options.score == "probability" else "logit")
        constant, reps, owner = scorecam.distinct_channels(acts, eps=options.mask_eps)
        selected = np.ones(acts.shape[0], bool)
        if options.top_channels is not None:
            selected = scorecam.top_channels(acts, options.top_channels, options.rank)
        run = selected & ~constant
        groups = np.unique(owner[run])
        remap = np.full(len(reps), -1, np.int64)
        remap[groups] = np.arange(len(groups))
        owner = np.where(run, remap[np.maximum(owner, 0)], -1)
        active = run if options.skip_constant else selected
        outputs = [self.class_output]
        base = preprocess.baseline_tensor(
            self.config.baseline, fwd.rgb, fwd.x, self.spec, self.norm
        )
        if options.score == "logit_delta":
            base_score = float(score(fwd.outputs)[0])
        elif base is None:
            base_score = 0.0
        else:
            base_score = float(score(self.session.run(base, outputs))[0])
        blank_score = None
        if (active & constant).any():  # every constant channel gives the same all-zero mask
            size = (self.spec.height, self.spec.width)
            blank = scorecam.apply_masks(fwd.x, np.zeros((1, *size), np.float32), self.spec.layout)
            blank_score = float(score(self.session.run(blank, outputs))[0])
        return _Plan(fwd, score, reps[groups], owner, active, constant, base_score, blank_score)

    def _explain_plans(self, plans: list[_Plan]) -> list[Result]:
        """Run every plan's masked passes in shared equal-size batches, then combine."""
        t0 = time.perf_counter()
        options = self.config.options
        size = (self.spec.height, self.spec.width)
        counts = [len(p.reps) for p in plans]
        total = sum(counts)
        n_chunks = max(1, math.ceil(total / self.batch_size()))
        chunk = max(1, math.ceil(total / n_chunks))
        mask_time = 0.0

        def masked_inputs() -> Iterator[np.ndarray]:  # built lazily, one chunk at a time
            nonlocal mask_time
            for plan in plans:
                for masks in scorecam.iter_masks(plan.fwd.acts, plan.reps, size, chunk, options):
                    t = time.perf_counter()
                    batch = scorecam.apply_masks(plan.fwd.x, masks, self.spec.layout)
                    mask_time += time.perf_counter() - t
                    yield batch

        outputs = [self.class_output]
        pad = chunk if self.max_batch is None else self.max_batch
        runs = self.session.run_chunks(_rebatch(masked_inputs(), chunk), outputs, pad_to=pad)
        rows = [out[self.class_output] for out in runs]
        masked_time = time.perf_counter() - t0 - mask_time
        all_rows = np.concatenate(rows) if rows else np.zeros((0, 1), np.float32)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        results = []
        for i, plan in enumerate(plans):
            t_comb = time.perf_counter()
            part = {self.class_output: all_rows[offsets[i] : offsets[i + 1]]}
            scores = plan.score(part) if counts[i] else np.zeros(0)
            weights = self._weights(plan, scores)
            cam = scorecam.combine(plan.fwd.acts, weights, size, options).astype(np.float32)
            share = counts[i] / total if total else 1.0 / len(plans)
            results.append(
                self._result(
                    plan, cam, mask_time * share, masked_time * share, time.perf_counter() - t_comb
                )
            )
        return results

    def _weights(self, plan: _Plan, scores: np.ndarray) -> np.ndarray:
        """Channel weights from the scores of the plan's masked passes."""
        options = self.config.options
        k = plan.fwd.acts.shape[0]
        channel_scores = np.zeros(k)
        ran = plan.owner >= 0
        channel_scores[ran] = scores[plan.owner[ran]]
        if plan.blank_score is not None:
            channel_scores[plan.active & plan.constant] = plan.blank_score
        weights = np.zeros(k)
        if plan.active.any():
            weights[plan.active] = scorecam.channel_weights(
                channel_scores[plan.active],
                plan.base_score,
                channel_softmax=options.channel_softmax,
            )
        return weights

    def _result(
        self, plan: _Plan, cam: np.ndarray, masks_s: float, masked_s: float, combine_s: float
    ) -> Result:
        fwd, config, options = plan.fwd, self.config, self.config.options
        rgb, probs, class_index = fwd.rgb, fwd.probs, fwd.class_index
        notes = list(self.notes)
        if not cam.any():
            notes.append("the saliency map is all zero: no channel raised the class score")
        t = time.perf_counter()
        saliency = cv2.resize(cam, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        saliency = np.clip(saliency, 0.0, 1.0).astype(np.float32)
        combine_s += time.perf_counter() - t
        k = fwd.acts.shape[0]
        used = int(plan.active.sum())
        skipped = int((plan.constant & ~plan.active).sum())
        top = np.argsort(-probs[0], kind="stable")[:5]
        timings = {
            "preprocess_s": fwd.preprocess_s,
            "activation_s": fwd.activation_s,
            "masks_s": masks_s,
            "masked_s": masked_s,
            "combine_s": combine_s,
        }
        timings["total_s"] = sum(timings.values())
        return Result(
            saliency=saliency,
            saliency_input=cam,
            image=rgb,
            class_index=class_index,
            label=self._label(class_index),
            score=float(probs[0, class_index]),
            top5=tuple((int(i), self._label(int(i)), float(probs[0, i])) for i in top),
            model=config.model,
            node=self.candidate.label,
            tensor=self.candidate.tensor,
            channels_total=int(k),
            channels_used=used,
            channels_skipped=skipped,
            channels_dropped=int(k - used - skipped),
            masked_passes=len(plan.reps) + (plan.blank_score is not None),
            provider=self.provider,
            timings=timings,
            options={
                "compat": _compat_name(options),
                **asdict(options),
                "baseline": config.baseline,
                "batch_size": self.batch_size(),
                "preprocess": asdict(self.norm),
                "input_size": [self.spec.height, self.spec.width],
                "layout": self.spec.layout,
            },
            source=fwd.source,
            notes=tuple(notes),
        )

    def _label(self, index: int) -> str | None:
        if self.labels is not None and 0 <= index < len(self.labels):
            return self.labels[index]
        return None


def _compat_name(options: ScoreCamOptions) -> str:
    """The preset the options come from (fast-mode settings aside), or ``custom``."""
    core = replace(options, top_channels=None, rank="std")
    return next((name for name, preset in COMPAT.items() if preset == core), "custom")


def _validate(config: ExplainerConfig) -> None:
    if config.options.score == "logit_delta" and config.baseline != "none":
        raise ConfigError(
            "score 'logit_delta' already subtracts the clean image's score; use baseline 'none'"
        )
    if config.baseline not in BASELINES:
        raise ConfigError(f"unknown baseline '{config.baseline}'; valid: {', '.join(BASELINES)}")
    if config.preset is not None and config.preset not in preprocess.PRESETS:
        raise ConfigError(
            f"unknown preset '{config.preset}'; valid: {', '.join(preprocess.PRESETS)}"
        )
    if config.layout is not None and config.layout not in ("NCHW", "NHWC"):
        raise ConfigError(f"unknown layout '{config.layout}'; valid: NCHW, NHWC")
    if config.batch_size is not None and config.batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {config.batch_size}")
    if config.threads is not None and config.threads < 1:
        raise ConfigError(f"threads must be at least 1, got {config.threads}")
    if config.max_pixels < 1:
        raise ConfigError(f"max_pixels must be positive, got {config.max_pixels}")
    for name, values in (("mean", config.mean), ("std", config.std)):
        if values is not None and len(values) not in (1, 3):
            raise ConfigError(f"{name} needs 1 or 3 values, got {len(values)}")
    if config.std is not None and any(v == 0 for v in config.std):
        raise ConfigError("std values must be non-zero")
    if config.size is not None and min(config.size) < 1:
        raise ConfigError(f"size must be positive, got {config.size}")


def _normalization(config: ExplainerConfig, metadata: dict[str, str]) -> Normalization:
    name = config.preset or metadata.get(PRESET_KEY, "imagenet")
    if name not in preprocess.PRESETS:
        raise ConfigError(
            f"the model's metadata asks for preset '{name}', which onnxcam does not know; "
            f"pass --preset ({', '.join(preprocess.PRESETS)})"
        )
    base = preprocess.PRESETS[name]

    def triple(values: tuple[float, ...] | None, default: tuple[float, ...]) -> tuple[float, ...]:
        if values is None:
            return default
        return tuple(values) * 3 if len(values) == 1 else tuple(values)

    return Normalization(
        mean=triple(config.mean, base.mean),
        std=triple(config.std, base.std),
        scale=base.scale if config.scale is None else float(config.scale),
        bgr=base.bgr if config.bgr is None else bool(config.bgr),
    )


def _channels_first(acts: np.ndarray, layout: str) -> np.ndarray:
    return np.transpose(acts, (2, 0, 1)) if layout == "NHWC" else acts


def _labels(spec: str | tuple[str, ...] | None, metadata: dict[str, str]) -> list[str] | None:
    if isinstance(spec, tuple):
        return list(spec)
    if spec is not None:
        return load_labels(spec)
    return labels_from_metadata(metadata)
