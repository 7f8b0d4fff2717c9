"""The ``Explainer`` facade: images and targets in, :class:`Result` out.

Nothing here is method- or target-specific, and nothing here does the work: the model is
prepared once (:mod:`onnxcam.prepare`), inputs go through the clean pass
(:mod:`onnxcam.activation`), targets bind and the method's plan becomes a job
(:mod:`onnxcam.jobs`), every pass runs through the one runner (:mod:`onnxcam.runner`), and the
scores become a :class:`Result` (:meth:`Result.from_passes`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from . import graph, jobs, methods, preprocess
from .activation import ActivationPass, Forward, ImageLike, References, inputs
from .config import ExplainerConfig, method_options, model_name, plain_numbers, validate
from .errors import ConfigError, OnnxCamError
from .jobs import Bound
from .methods import Clean, Method, TargetMap
from .prepare import Prepared, Stages, prepare
from .result import Provenance, Result
from .runner import Job, Runnable, Runner, Stage
from .runtime import ProviderSpec, provider_specs, session_settings
from .targets import Target, TargetLike, resolve_targets
from .targets.base import TargetSpec

__all__ = ["Explainer", "Forward", "ImageLike"]


class Explainer:
    """Explains an image model's outputs with a saliency method; the session is built once.

    Its keywords are the fields of :class:`~onnxcam.config.ExplainerConfig` (each documented
    there), plus ``compat``: a named preset of the method's settings reproducing another
    implementation (``official``, the default; ``grad-cam`` for scorecam, ablation and
    eigencam; ``torchcam`` for scorecam, sscam, iscam and cam), exclusive with ``options``.
    """

    def __init__(
        self, model: str | os.PathLike[str] | bytes | bytearray | memoryview | onnx.ModelProto,
        *, node: str = "auto", fuse: str = "equal",
        preset: str | None = None, mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None, scale: float | None = None, bgr: bool | None = None,
        size: tuple[int, int] | None = None, layout: str | None = None, baseline: str = "none",
        batch_size: int | None = None, threads: int | None = None, device: str = "auto",
        labels: str | Path | Sequence[str] | None = None,
        max_pixels: int = preprocess.DEFAULT_MAX_PIXELS, options: Any = None,
        compat: str | None = None, fp16: bool = False, method: str = "scorecam",
        providers: Sequence[ProviderSpec] | None = None, session_options: Any = None,
        budget_s: float | None = None, time_limit_s: float | None = None,
        resize: str | None = None, split_head: bool = False, backend: str = "ort",
        predictor: str | None = None, predictor_protocol: str = "v2",
    ) -> None:  # fmt: skip
        if compat is not None:
            if options is not None:
                raise ConfigError("pass either compat or options, not both")
            options = method_options(method, compat=compat)
        config = ExplainerConfig(
            model=_model_source(model), node=node, fuse=fuse, preset=preset,
            mean=None if mean is None else plain_numbers(mean),
            std=None if std is None else plain_numbers(std), scale=scale, bgr=bgr,
            size=None if size is None else plain_numbers(size, integer=True), layout=layout,
            baseline=baseline, batch_size=batch_size, threads=threads, device=device,
            labels=_label_spec(labels), max_pixels=max_pixels, options=options, fp16=fp16,
            method=method, providers=None if providers is None else provider_specs(providers),
            session_options=None if session_options is None else session_settings(session_options),
            budget_s=budget_s, time_limit_s=time_limit_s, resize=resize, split_head=split_head,
            backend=backend, predictor=predictor, predictor_protocol=predictor_protocol,
        )  # fmt: skip
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
        validate(config)  # before anything uses a setting (from_config too)
        self.config = config
        self.method: Method = methods.create(
            config.method, options=config.options, baseline=config.baseline,
            budget_s=config.budget_s,
        )  # fmt: skip
        self.prepared: Prepared = prepare(config)
        self.notes: list[str] = list(self.prepared.notes)
        self.runner = Runner(
            self.session, batch=self.batch_size(), fixed=self.max_batch,
            time_limit=config.time_limit_s,
        )  # fmt: skip
        self._clean = ActivationPass(self.prepared, self.runner, max_pixels=config.max_pixels)
        self._references = References(self._clean)
        self._stages = Stages(self.prepared, config)
        self.stage(self.method)  # a head the method needs is split off and opened now

    # ----------------------------------------------------------------- the prepared model

    @property
    def session(self) -> Runnable:
        """What the backend opened (for ONNX Runtime, a :class:`~onnxcam.runtime.Session`)."""
        return self.prepared.session

    @property
    def spec(self) -> preprocess.InputSpec:
        return self.prepared.spec

    @property
    def norm(self) -> preprocess.Normalization:
        return self.prepared.norm

    @property
    def candidate(self) -> graph.Candidate:
        """The explained node (the first, when several are)."""
        return self.prepared.candidates[0]

    @property
    def candidates(self) -> tuple[graph.Candidate, ...]:
        """Every explained node: one, or several whose channels are taken together."""
        return self.prepared.candidates

    @property
    def node_label(self) -> str:
        """The explained node's name, or the names joined by commas."""
        return ",".join(c.label for c in self.prepared.candidates)

    @property
    def metadata(self) -> dict[str, str]:
        return self.prepared.metadata

    @property
    def labels(self) -> list[str] | None:
        return self.prepared.labels

    @property
    def max_batch(self) -> int | None:
        """The model's fixed batch dimension when it could not be freed, else None."""
        return self.prepared.fixed_batch

    @property
    def provider(self) -> str:
        return self.prepared.provider

    def stage(self, method: Method) -> Stage | None:
        """Where ``method``'s passes run: None for the model; the head after the node (opened
        once, when a method first needs it) or the linear head read from the graph.

        Raises:
            ConfigError: the model has no head of the kind the method needs.
        """
        return self._stages.for_method(method)

    def head_cost(self) -> dict[str, Any]:
        """The head after the node: its nodes, the whole model's, and what it takes clean."""
        head = self.prepared.head
        if head is None:
            return {"head": None, "reason": self.prepared.head_note}
        return {"head_nodes": head.nodes, "model_nodes": head.total, "clean": list(head.side)}

    def batch_size(self) -> int:
        """Passes per run: the user's choice, capped by what the model allows."""
        wanted = self.config.batch_size or self.prepared.default_batch
        return max(1, min(wanted, self.max_batch or wanted))

    # ----------------------------------------------------------------- inputs and targets

    def preprocess(self, image: ImageLike) -> np.ndarray:
        """The model input onnxcam makes of ``image``: (1, C, H, W) or (1, H, W, C), in the
        model's dtype (what ``explain(tensor=...)`` takes)."""
        return self._clean.load(image).x

    def forward(
        self, image: ImageLike | None = None, *, tensor: np.ndarray | None = None
    ) -> Forward:
        """Read and preprocess the image, or take the caller's ``tensor``, and run the
        activation pass (no other passes)."""
        return self._clean.forward(image, tensor)

    def bind(
        self, fwd: Forward, target: TargetLike | Iterable[TargetLike] | None = None, *,
        score_kind: str | None = None, method: Method | None = None,
    ) -> list[Target]:  # fmt: skip
        """The targets ``target`` means for this image, bound to its clean outputs.

        Args:
            fwd: the image after :meth:`forward`.
            target: None (the top class), a class number, a spec such as ``"top:5"`` or
                ``"embedding:ref=b.jpg"``, a callable ``outputs -> (B,)``, or a list of these.
            score_kind: what class targets with ``prob=auto`` score (``"probability"`` or
                ``"logit"``); default: what the method scores.
            method: the method the targets are for (default: the explainer's): what it
                scores and how it scores detections.
        """
        return self._bind(fwd, resolve_targets(target), score_kind, method or self.method)

    def _bind(
        self, fwd: Forward, specs: Sequence[TargetSpec], score_kind: str | None, method: Method
    ) -> list[Target]:
        return jobs.bind_targets(
            fwd, specs, prepared=self.prepared, method=method, score_kind=score_kind,
            embed=self._references,
        )  # fmt: skip

    def score(self, targets: Sequence[Target], count: int, inputs: Any) -> np.ndarray:
        """The targets' scores of ``count`` model inputs, (count, len(targets)).

        ``inputs(chunk)`` yields the inputs at most ``chunk`` rows at a time; they run through
        the same runner as every other pass.
        """
        outcome = self.runner.run([jobs.scoring_job(targets, count, inputs)])[0]
        if isinstance(outcome, OnnxCamError):
            raise outcome
        return jobs.scores(outcome, len(targets))

    # ----------------------------------------------------------------- explanations

    def explain(
        self,
        image: ImageLike | None = None,
        *,
        target: TargetLike | Iterable[TargetLike] | None = None,
        tensor: np.ndarray | None = None,
    ) -> Result:
        """Explain one image (a path, or an RGB array) for ``target`` (default: top class);
        several targets share one set of passes (see :meth:`bind` for what ``target`` takes).

        With ``tensor``, explain that model input as given (the model's layout and dtype,
        batch of one, e.g. from the caller's own pipeline); the map is at the tensor's size,
        or at the image's when ``image`` comes along for the overlay.
        ``explain(tensor=explainer.preprocess(img), image=img)`` equals ``explain(img)``.
        """
        return self.explain_forward(self.forward(image, tensor=tensor), target=target)

    def explain_forward(
        self, fwd: Forward, *, target: TargetLike | Iterable[TargetLike] | None = None
    ) -> Result:
        """Explain an image that has been through :meth:`forward`."""
        bound = self._planned(fwd, resolve_targets(target))
        outcome = bound if isinstance(bound, OnnxCamError) else self._explain_bound([bound])[0]
        if isinstance(outcome, OnnxCamError):
            raise outcome
        return outcome

    def explain_many(
        self,
        images: Iterable[ImageLike | None] | None = None,
        *,
        tensors: Iterable[np.ndarray] | None = None,
        target: TargetLike | Iterable[TargetLike] | None = None,
        group: int = 4,
    ) -> Iterator[tuple[Any, Result | OnnxCamError]]:
        """Explain several images (or prepared ``tensors``, with ``images`` alongside or not),
        packing their passes into shared batches.

        Inputs are taken ``group`` at a time; a bad one does not stop the others.

        Yields:
            ``(input, result)`` in input order, where ``input`` is the image (or the tensor)
            and ``result`` the :class:`Result` or that input's :class:`OnnxCamError`
            (configuration and output errors still raise).
        """
        specs = resolve_targets(target)
        pending = inputs(images, tensors)
        step = max(1, group)
        for start in range(0, len(pending), step):
            chunk = pending[start : start + step]
            planned = [self._planned(fwd, specs) for fwd in self._clean.forward_many(chunk)]
            explained = iter(self._explain_bound([b for b in planned if isinstance(b, Bound)]))
            for item, outcome in zip(chunk, planned, strict=True):
                shown = item.image if item.tensor is None else item.tensor
                yield shown, next(explained) if isinstance(outcome, Bound) else outcome

    def clean(self, fwd: Forward) -> Clean:
        """The image as a method sees it."""
        return jobs.clean_view(fwd, self.norm)

    def method_maps(
        self, fwd: Forward, targets: Sequence[Target], *, method: Method | None = None,
        at: str = "input",
    ) -> list[TargetMap]:  # fmt: skip
        """``method``'s map of each bound target (see :meth:`bind`; default method: the
        explainer's), its passes run through the runner; at the model's input resolution,
        or with ``at="feature"`` at the feature map's: the map before upsampling (what
        ``onnxcam export`` writes without ``resize``)."""
        if at not in ("input", "feature"):
            raise ConfigError(f"at must be 'input' or 'feature', not '{at}'")
        bound = jobs.planned(fwd, targets, method or self.method, self.norm, at=at)
        outcome = self.runner.run([self._job(bound)])[0]
        if isinstance(outcome, OnnxCamError):
            raise outcome
        scores = jobs.scores(outcome, len(bound.targets))
        return bound.method.combine_many(bound.clean, bound.plan, scores, bound.clean_scores)

    def _planned(
        self, fwd: Forward | OnnxCamError, specs: Sequence[TargetSpec]
    ) -> Bound | OnnxCamError:
        """The image's targets bound and its passes planned, or its error (a
        :class:`ConfigError` raises)."""
        if isinstance(fwd, OnnxCamError):
            return fwd
        try:
            targets = self._bind(fwd, specs, None, self.method)
            return jobs.planned(fwd, targets, self.method, self.norm)
        except ConfigError:
            raise
        except OnnxCamError as exc:
            return exc

    def _job(self, bound: Bound) -> Job:
        stage = self.stage(bound.method)
        return jobs.passes_job(bound, stage=stage, prepared=self.prepared)

    def _explain_bound(self, ready: Sequence[Bound]) -> list[Result | OnnxCamError]:
        """Every image's passes in shared batches, then each target's map."""
        ran = self.runner.run([self._job(b) for b in ready])
        return [
            outcome if isinstance(outcome, OnnxCamError)
            else Result.from_passes(bound, outcome, provenance(self))
            for bound, outcome in zip(ready, ran, strict=True)
        ]  # fmt: skip


def provenance(explainer: Explainer) -> Provenance:
    """What each result of ``explainer`` records about where it came from."""
    return Provenance(
        model=model_name(explainer.config.model), node=explainer.node_label,
        tensor=",".join(c.tensor for c in explainer.candidates),
        batch_size=explainer.batch_size(), preprocess=asdict(explainer.norm),
        provider=explainer.provider, notes=tuple(explainer.notes),
        fuse=explainer.prepared.fuse, instead=explainer.prepared.instead,
    )  # fmt: skip


def _model_source(model: Any) -> Any:
    """The model as the config keeps it: a path as text, bytes of any kind as ``bytes``, a
    ModelProto serialized; anything else as it is, for :func:`validate` to name."""
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, (bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, os.PathLike):
        return os.fsdecode(model)
    return model


def _label_spec(labels: Any) -> str | tuple[str, ...] | None:
    if labels is None or isinstance(labels, (str, Path)):
        return None if labels is None else str(labels)
    if isinstance(labels, Iterable):
        return tuple(labels)
    raise ConfigError(
        "labels must be a labels file's path or a sequence of class names, not "
        f"{type(labels).__name__}"
    )
