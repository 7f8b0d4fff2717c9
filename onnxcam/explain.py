"""The ``Explainer`` facade: images and targets in, :class:`Result` out.

Nothing here is method- or target-specific: the method plans the passes and combines their
scores (:mod:`onnxcam.methods`), targets score outputs (:mod:`onnxcam.targets`), and every
pass runs through the one runner (:mod:`onnxcam.runner`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from . import graph, methods, modelinfo, ops, preprocess
from .config import ExplainerConfig, method_options, model_name, plain_numbers, validate
from .errors import ConfigError, NodeError, OnnxCamError
from .geometry import Geometry
from .methods import Clean, Method, Plan, TargetMap
from .prepare import Prepared, head_stage, linear_stage, prepare
from .result import Result, TargetResult
from .runner import Feed, Job, JobResult, Runner, Stage, one_input
from .runtime import ProviderSpec, Session, provider_specs, session_settings
from .targets import BindContext, Target, TargetLike, checked_scores, resolve_targets
from .targets.base import TargetSpec

__all__ = ["Explainer", "Forward", "ImageLike"]

ImageLike = str | Path | np.ndarray


@dataclass(frozen=True)
class Forward:
    """One image through preprocessing and the activation pass.

    Attributes:
        source: the image's path, or None for an array.
        rgb: the image, RGB uint8 (H, W, 3); None when a tensor came without one.
        x: the model input, (1, C, H, W) or (1, H, W, C).
        outputs: the model's outputs for ``x`` (batch of one), by name.
        acts: the node's activations, (K, h, w) float32.
        preprocess_s, activation_s: seconds spent.
        spec: the input's layout, size and dtype.
        given_tensor: ``x`` is the caller's tensor, not onnxcam's preprocessing of ``rgb``.
        geometry: where the image sits in ``x`` (stretched or letterboxed); None without an
            image.
        groups: with several nodes, how many of ``acts``' channels each gave, in order.
        features: each explained node's activations, (K_i, h_i, w_i) float32.
        clean: the clean values (batch of one) of the other tensors the model's head reads.
    """

    source: str | None
    rgb: np.ndarray | None
    x: np.ndarray
    outputs: dict[str, np.ndarray]
    acts: np.ndarray
    preprocess_s: float
    activation_s: float
    spec: preprocess.InputSpec
    given_tensor: bool = False
    geometry: Geometry | None = None
    groups: tuple[int, ...] = ()
    features: tuple[np.ndarray, ...] = ()
    clean: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class _Input:
    """One thing to explain: an image, or a prepared tensor (with an image or not)."""

    image: ImageLike | None
    tensor: np.ndarray | None = None


@dataclass(frozen=True)
class _Loaded:
    """An input made ready for the activation pass."""

    source: str | None
    rgb: np.ndarray | None
    x: np.ndarray
    spec: preprocess.InputSpec
    preprocess_s: float
    given_tensor: bool = False
    geometry: Geometry | None = None


@dataclass(frozen=True)
class _Bound:
    """One image ready for its passes: its targets, their clean scores, the method's plan."""

    fwd: Forward
    clean: Clean
    targets: list[Target]
    clean_scores: list[float]
    plan: Plan
    method: Method


class Explainer:
    """Explains an image model's outputs with a saliency method; the session is built once.

    Args:
        model: the ``.onnx`` file's path, the model's bytes (``bytes``, ``bytearray`` or
            ``memoryview``), or an ``onnx.ModelProto`` (never modified; external data only
            with a path).
        node: ``auto``, a node name, or an output tensor name.
        preset: ``imagenet``, ``caffe``, ``tf``, ``unit`` or ``raw``; default: the model's
            ``onnxcam.preset`` metadata, else ``imagenet``.
        mean, std, scale, bgr: override parts of the preset (ranges: :data:`onnxcam.config.LIMITS`,
            which keep the model's input finite in float32).
        size: (height, width) when the model's input size is not static.
        layout: ``NCHW`` or ``NHWC`` to override detection.
        baseline: ``none``, ``zero``, ``black`` or ``blur`` (SPEC §2 step 4).
        batch_size: passes per run (default: from the model and a memory budget).
        threads: CPU threads for ONNX Runtime, at most 4 per CPU this process may use
            (:data:`onnxcam.config.MAX_THREADS`).
        device: ``auto``, ``cpu`` or ``cuda``.
        labels: a labels file or a sequence of names (default: the model's metadata).
        max_pixels: refuse images with more pixels than this.
        options: the method's settings, e.g. :class:`ScoreCamOptions` for ``scorecam``,
            :class:`~onnxcam.methods.RiseOptions` for ``rise`` (default: its ``official``
            preset).
        compat: a named preset of the method's settings reproducing another implementation
            (``official``, the default; ``grad-cam`` for scorecam, ablation and eigencam;
            ``torchcam`` for scorecam, sscam, iscam and cam); exclusive with ``options``.
        fp16: run the model in float16 (inputs and outputs stay float32); meant for CUDA.
        method: the saliency method: a name in :data:`onnxcam.METHODS` (``scorecam``, the
            default; ``sscam``, ``iscam``, ``groupcam``, ``ablation``, ``recipro``, ``cam``,
            ``eigencam``, ``rise``, ``activation``).
        split_head: split off the model's head after the node even when ``method`` does not
            run on it (``ablation``, ``recipro`` and ``cam`` do), so that
            :meth:`method_maps` and :func:`onnxcam.evaluate.evaluate` can run those methods
            too; it costs a copy of the head's weights.
        providers: execution providers exactly as ONNX Runtime takes them (names or
            ``(name, options)`` pairs), instead of ``device``; the first must serve.
        session_options: an ``onnxruntime.SessionOptions`` or a mapping of its properties
            (plus ``config_entries``); kept as a plain mapping so the Explainer still pickles.
        budget_s: seconds per image: anytime Score-CAM runs the most promising masks first
            and stops when the time is spent (the record says how many ran and estimates how
            close the map is to the exact one).
        time_limit_s: seconds an image's passes may take in all; a model that runs longer
            (one that never finishes) is stopped and the image fails with a
            :class:`TimeLimitError`. ONNX Runtime stops between operators: a single
            operator that runs longer than the limit (a huge convolution) finishes first.
        resize: how images are fitted into the input: ``stretch`` (the whole image resized
            to the input size) or ``letterbox`` (aspect ratio kept, padded with grey 114, as
            Ultralytics does); default: ``letterbox`` for YOLO-family detectors, else
            ``stretch``. Boxes and maps are mapped back to the image either way.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes | bytearray | memoryview | onnx.ModelProto,
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
        options: Any = None,
        compat: str | None = None,
        fp16: bool = False,
        method: str = "scorecam",
        providers: Sequence[ProviderSpec] | None = None,
        session_options: Any = None,
        budget_s: float | None = None,
        time_limit_s: float | None = None,
        resize: str | None = None,
        split_head: bool = False,
    ) -> None:
        if compat is not None:
            if options is not None:
                raise ConfigError("pass either compat or options, not both")
            options = method_options(method, compat=compat)
        label_spec: str | tuple[str, ...] | None
        if labels is None or isinstance(labels, (str, Path)):
            label_spec = None if labels is None else str(labels)
        elif isinstance(labels, Iterable):
            label_spec = tuple(labels)
        else:
            raise ConfigError(
                "labels must be a labels file's path or a sequence of class names, not "
                f"{type(labels).__name__}"
            )
        source: Any = model  # validate() names any other type
        if isinstance(model, onnx.ModelProto):
            source = model.SerializeToString()
        elif isinstance(model, (bytearray, memoryview)):
            source = bytes(model)
        elif isinstance(model, os.PathLike):
            source = os.fsdecode(model)
        config = ExplainerConfig(
            model=source,
            node=node,
            preset=preset,
            mean=None if mean is None else plain_numbers(mean),
            std=None if std is None else plain_numbers(std),
            scale=scale,
            bgr=bgr,
            size=None if size is None else plain_numbers(size, integer=True),
            layout=layout,
            baseline=baseline,
            batch_size=batch_size,
            threads=threads,
            device=device,
            labels=label_spec,
            max_pixels=max_pixels,
            options=options,
            fp16=fp16,
            method=method,
            providers=None if providers is None else provider_specs(providers),
            session_options=None if session_options is None else session_settings(session_options),
            budget_s=budget_s,
            time_limit_s=time_limit_s,
            resize=resize,
            split_head=split_head,
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
        validate(config)  # before anything uses a setting
        self.config = config
        self.method: Method = methods.create(
            config.method,
            options=config.options,
            baseline=config.baseline,
            budget_s=config.budget_s,
        )
        self.prepared: Prepared = prepare(config)
        self.notes: list[str] = list(self.prepared.notes)
        self.runner = Runner(
            self.session,
            batch=self.batch_size(),
            fixed=self.max_batch,
            time_limit=config.time_limit_s,
        )
        self._references: dict[str, dict[str, np.ndarray]] = {}
        self._stages: dict[str, Stage] = {}
        self._stage_lock = threading.Lock()
        self.stage(self.method)  # a head the method needs is split off and opened now
        if self.prepared.head is not None and self.prepared.head.clean:
            shown = ", ".join(f"'{name}'" for name in self.prepared.head.clean)
            if self.method.space == "head":
                self.notes.append(
                    f"the head after the node also reads {shown}, computed from the image "
                    "before the node: it gets their clean values"
                )

    # The prepared model, under the names the API has always had.
    @property
    def session(self) -> Session:
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
        return str(self.session.info.provider)

    def stage(self, method: Method) -> Stage | None:
        """Where ``method``'s passes run: None for the model; the head after the node (opened
        once, when a method first needs it) or the linear head read from the graph.

        Raises:
            ConfigError: the model has no head of the kind the method needs.
        """
        if method.space not in ("head", "linear"):
            return None
        with self._stage_lock:
            if method.space not in self._stages:
                if method.space == "head":
                    made = head_stage(self.prepared, self.config, method.name)
                else:
                    made = linear_stage(self.prepared, method.name)
                self._stages[method.space] = made
            return self._stages[method.space]

    def head_cost(self) -> dict[str, Any]:
        """The head after the node: its nodes, the whole model's, and what it takes clean."""
        head = self.prepared.head
        if head is None:
            return {"head": None, "reason": self.prepared.head_note}
        return {"head_nodes": head.nodes, "model_nodes": head.total, "clean": list(head.clean)}

    def batch_size(self) -> int:
        """Passes per run: the user's choice, capped by what the model allows."""
        wanted = self.config.batch_size or self.prepared.default_batch
        return max(1, min(wanted, self.max_batch or wanted))

    # ----------------------------------------------------------------- the activation pass

    def preprocess(self, image: ImageLike) -> np.ndarray:
        """The model input onnxcam makes of ``image``: (1, C, H, W) or (1, H, W, C), in the
        model's dtype (what ``explain(tensor=...)`` takes)."""
        return self._load(image).x

    def forward(
        self, image: ImageLike | None = None, *, tensor: np.ndarray | None = None
    ) -> Forward:
        """Read and preprocess the image, or take the caller's ``tensor``, and run the
        activation pass (no other passes)."""
        outcome = self._forward_many([_Input(image, tensor)])[0]
        if isinstance(outcome, OnnxCamError):
            raise outcome
        return outcome

    def _load(self, image: ImageLike) -> _Loaded:
        t0 = time.perf_counter()
        if isinstance(image, (str, Path)):
            source: str | None = str(image)
            rgb = preprocess.read_image(image, max_pixels=self.config.max_pixels)
        else:
            source = None
            rgb = preprocess.as_rgb(image)
        x, geometry = preprocess.fit_tensor(rgb, self.spec, self.norm, self.prepared.resize)
        return _Loaded(source, rgb, x, self.spec, time.perf_counter() - t0, geometry=geometry)

    def _load_tensor(self, tensor: np.ndarray, image: ImageLike | None) -> _Loaded:
        """A caller's model input, checked against what the model takes; the image, when
        given, is only for the overlay and the map's final size."""
        t0 = time.perf_counter()
        spec = modelinfo.tensor_spec(
            np.asarray(tensor), self.spec, dynamic_size=self.prepared.dynamic_size
        )
        loaded = self._load(image) if image is not None else None
        source = loaded.source if loaded else None
        rgb = loaded.rgb if loaded else None
        x = np.ascontiguousarray(tensor)
        geometry = None
        if rgb is not None:  # how the caller made the tensor is unknown: the image stretched
            geometry = Geometry.of("stretch", rgb.shape[:2], (spec.height, spec.width))
        return _Loaded(
            source, rgb, x, spec, time.perf_counter() - t0, given_tensor=True, geometry=geometry
        )

    def _forward_many(self, inputs: Sequence[_Input]) -> list[Forward | OnnxCamError]:
        """Activation passes of several inputs in shared batches; a bad one is its error."""
        loaded: list[_Loaded | OnnxCamError] = []
        for given in inputs:
            try:
                if given.tensor is not None:
                    loaded.append(self._load_tensor(given.tensor, given.image))
                elif given.image is not None:
                    loaded.append(self._load(given.image))
                else:
                    raise ConfigError("nothing to explain: pass an image or tensor=")
            except ConfigError:
                raise
            except OnnxCamError as exc:
                loaded.append(exc)
        model_outputs = tuple(o.name for o in self.prepared.outputs)
        features = self.prepared.feature_outputs
        clean_outputs = dict(self.prepared.clean_outputs)
        fetch = tuple(dict.fromkeys((*model_outputs, *features, *clean_outputs.values())))
        good = [item for item in loaded if isinstance(item, _Loaded)]
        feature = {
            name: f"the feature map of node '{cand.label}'"
            for name, cand in zip(features, self.candidates, strict=True)
        }
        jobs = [
            Job(1, one_input(item.x), fetch, dict, what="clean input", labels=feature)
            for item in good
        ]
        ran = iter(self.runner.run(jobs))
        outcomes: list[Forward | OnnxCamError] = []
        for item in loaded:
            if isinstance(item, OnnxCamError):
                outcomes.append(item)
                continue
            done = next(ran)
            if isinstance(done, OnnxCamError):
                outcomes.append(done)
                continue
            values = done.values
            maps = [
                ops.channels_first(values[name][0], cand.layout)
                for name, cand in zip(features, self.candidates, strict=True)
            ]
            flat = [
                (cand, m)
                for cand, m in zip(self.candidates, maps, strict=True)
                if min(m.shape[1:]) < 2
            ]
            if flat:
                cand, m = flat[0]
                outcomes.append(
                    NodeError(
                        f"node '{cand.label}' gives a {m.shape[1]}×{m.shape[2]} map for an input "
                        f"of {item.spec.height}×{item.spec.width}: no spatial layout to explain; "
                        "pick an earlier node (see `onnxcam nodes`) or a larger --size"
                    )
                )
                continue
            acts = ops.stack_maps(maps)
            outputs = {name: values[name] for name in model_outputs}
            clean = {tensor: values[name] for tensor, name in clean_outputs.items()}
            outcomes.append(
                Forward(
                    item.source,
                    item.rgb,
                    item.x,
                    outputs,
                    acts.astype(np.float32),
                    item.preprocess_s,
                    done.run_s,
                    item.spec,
                    item.given_tensor,
                    item.geometry,
                    tuple(m.shape[0] for m in maps) if len(maps) > 1 else (),
                    tuple(m.astype(np.float32, copy=False) for m in maps),
                    clean,
                )
            )
        return outcomes

    # ----------------------------------------------------------------- targets

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
        return self._bind(fwd, resolve_targets(target), score_kind, method)

    def _bind(
        self,
        fwd: Forward,
        specs: Sequence[TargetSpec],
        score_kind: str | None = None,
        method: Method | None = None,
    ) -> list[Target]:
        method = method or self.method
        ctx = BindContext(
            outputs=self.prepared.outputs,
            labels=self.labels,
            score_kind=score_kind or method.score_kind,
            embed=self._reference,
            input_hw=(fwd.spec.height, fwd.spec.width),
            geometry=fwd.geometry,
            metadata=self.metadata,
            detection_mode=method.detection_mode,
        )
        return [bound for spec in specs for bound in spec.bind(ctx, fwd.outputs)]

    def _reference(self, image: str) -> Mapping[str, np.ndarray]:
        """The clean outputs of a reference image (cached: every image shares it)."""
        key = str(Path(image).resolve())
        if key not in self._references:
            self._references[key] = self.forward(image).outputs
        return self._references[key]

    def score(self, targets: Sequence[Target], count: int, inputs: Any) -> np.ndarray:
        """The targets' scores of ``count`` model inputs, (count, len(targets)).

        ``inputs(chunk)`` yields the inputs at most ``chunk`` rows at a time; they run through
        the same runner as every other pass.
        """
        job = self._scoring_job(targets, count, inputs)
        outcome = self.runner.run([job])[0]
        if isinstance(outcome, OnnxCamError):
            raise outcome
        return _scores(outcome, len(targets))

    @staticmethod
    def _scoring_job(
        targets: Sequence[Target],
        count: int,
        inputs: Any,
        *,
        budget_s: float | None = None,
        required: int = 0,
        stage: Stage | None = None,
    ) -> Job:
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
        outcome = self._explain_bound([self._prepare_passes(fwd, resolve_targets(target))])[0]
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
        if tensors is None:
            pending = [_Input(image) for image in images or ()]
        else:
            given = list(tensors)
            alongside = list(images) if images is not None else [None] * len(given)
            if len(alongside) != len(given):
                raise ConfigError(f"{len(given)} tensors but {len(alongside)} images alongside")
            pending = [_Input(i, t) for i, t in zip(alongside, given, strict=True)]
        step = max(1, group)
        for start in range(0, len(pending), step):
            chunk = pending[start : start + step]
            outcomes: list[Result | OnnxCamError | None] = []
            ready: list[_Bound] = []
            for fwd in self._forward_many(chunk):
                if isinstance(fwd, OnnxCamError):
                    outcomes.append(fwd)
                    continue
                try:
                    ready.append(self._prepare_passes(fwd, specs))
                    outcomes.append(None)
                except ConfigError:
                    raise
                except OnnxCamError as exc:
                    outcomes.append(exc)
            explained = iter(self._explain_bound(ready))
            for item, outcome in zip(chunk, outcomes, strict=True):
                shown = item.image if item.tensor is None else item.tensor
                yield shown, outcome if outcome is not None else next(explained)

    def clean(self, fwd: Forward) -> Clean:
        """The image as a method sees it."""
        return Clean(
            fwd.x, fwd.rgb, fwd.acts, fwd.spec, self.norm, groups=fwd.groups, features=fwd.features
        )

    def method_maps(
        self, fwd: Forward, targets: Sequence[Target], *, method: Method | None = None
    ) -> list[TargetMap]:
        """``method``'s map of each bound target (see :meth:`bind`; default method: the
        explainer's), at the model's input resolution, its passes run through the runner."""
        method = method or self.method
        clean_scores = [float(checked_scores(t, fwd.outputs, 1)[0]) for t in targets]
        clean = self.clean(fwd)
        bound = _Bound(fwd, clean, list(targets), clean_scores, method.plan(clean), method)
        outcome = self.runner.run([self._passes_job(bound)])[0]
        if isinstance(outcome, OnnxCamError):
            raise outcome
        scores = _scores(outcome, len(bound.targets))
        return method.combine_many(clean, bound.plan, scores, clean_scores)

    def _prepare_passes(self, fwd: Forward, specs: Sequence[TargetSpec]) -> _Bound:
        targets = self._bind(fwd, specs)
        clean_scores = [float(checked_scores(t, fwd.outputs, 1)[0]) for t in targets]
        clean = self.clean(fwd)
        return _Bound(fwd, clean, targets, clean_scores, self.method.plan(clean), self.method)

    def _explain_bound(self, ready: Sequence[_Bound]) -> list[Result | OnnxCamError]:
        """Every image's passes in shared batches, then each target's map."""
        jobs = [self._passes_job(b) for b in ready]
        results: list[Result | OnnxCamError] = []
        for bound, outcome in zip(ready, self.runner.run(jobs), strict=True):
            if isinstance(outcome, OnnxCamError):
                results.append(outcome)
                continue
            results.append(self._result(bound, outcome))
        return results

    def _passes_job(self, bound: _Bound) -> Job:
        """The image's planned passes, on the model or its head; a budget counts the time the
        activation pass took."""
        plan, fwd = bound.plan, bound.fwd
        budget = None
        if plan.budget_s is not None:
            budget = max(0.0, plan.budget_s - fwd.preprocess_s - fwd.activation_s)
        stage = self.stage(bound.method)
        inputs = plan.inputs
        if bound.method.space == "head":
            inputs = self._head_feeds(fwd, plan.inputs)
        return self._scoring_job(
            bound.targets, plan.count, inputs, budget_s=budget, required=plan.required,
            stage=stage,
        )  # fmt: skip

    def _head_feeds(self, fwd: Forward, inputs: Any) -> Any:
        """A head plan's blocks (each node's (n, K, h, w) maps) as the head's named inputs:
        maps in their node's layout, and the clean values of what else the head reads."""
        head = self.prepared.head
        assert head is not None  # stage() has checked
        cands = self.candidates

        def feeds(chunk: int) -> Iterator[Feed]:
            for block in inputs(chunk):
                n = len(block[0])
                feed = {}
                for cand, maps in zip(cands, block, strict=True):
                    shaped = maps.transpose(0, 2, 3, 1) if cand.layout == "NHWC" else maps
                    feed[head.feeds[cand.tensor]] = np.ascontiguousarray(shaped, np.float32)
                for name in head.clean:
                    feed[head.feeds[name]] = np.repeat(fwd.clean[name], n, axis=0)
                yield feed

        return feeds

    def _result(self, bound: _Bound, outcome: JobResult) -> Result:
        t0 = time.perf_counter()
        fwd, plan = bound.fwd, bound.plan
        scores = _scores(outcome, len(bound.targets))
        notes = list(self.notes)
        method = bound.method
        if not method.class_specific:
            notes.append(f"method '{method.name}' does not depend on the target")
        maps = []
        made_all = method.combine_many(bound.clean, plan, scores, bound.clean_scores)
        for target, made in zip(bound.targets, made_all, strict=True):
            cam, info = made.map, {**target.describe(), **made.info}
            if not cam.any():
                notes.append(
                    f"the map of target '{info['spec']}' is all zero: nothing the method "
                    "tried raised its score"
                )
            shown = cam if fwd.geometry is None else fwd.geometry.map_to_image(cam)
            maps.append(TargetResult(shown, cam, info))
        timings = {
            "preprocess_s": fwd.preprocess_s,
            "activation_s": fwd.activation_s,
            "masks_s": outcome.build_s,
            "masked_s": outcome.run_s,
            "combine_s": time.perf_counter() - t0,
        }
        timings["total_s"] = sum(timings.values())
        return Result(
            image=fwd.rgb,
            targets=tuple(maps),
            model=model_name(self.config.model),
            node=self.node_label,
            tensor=",".join(c.tensor for c in self.candidates),
            method=method.name,
            options={
                **method.options(),
                "batch_size": self.batch_size(),
                "preprocess": asdict(self.norm),
                "input_size": [fwd.spec.height, fwd.spec.width],
                **(fwd.geometry.describe() if fwd.geometry is not None else {}),
                "layout": fwd.spec.layout,
                "input": "tensor" if fwd.given_tensor else "image",
            },
            stats=dict(plan.stats),
            provider=self.provider,
            timings=timings,
            source=fwd.source,
            notes=tuple(notes),
        )


def _scores(outcome: JobResult, targets: int) -> np.ndarray:
    return outcome.values.get("scores", np.zeros((0, targets)))
