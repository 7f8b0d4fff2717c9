"""Inputs and the clean pass: images (or a caller's tensors) made into model inputs, and the
activation pass that gives the model's outputs and the explained feature maps (:class:`Forward`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import modelinfo, ops, preprocess
from .errors import ConfigError, NodeError, OnnxCamError
from .geometry import Geometry
from .prepare import Prepared
from .runner import Job, Runner, one_input

__all__ = ["ActivationPass", "Forward", "ImageLike", "Input", "Loaded", "References", "inputs"]

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
        groups: with several nodes fused as equals (``--fuse equal``), how many of
            ``acts``' channels each gave, in order; empty for one node or ``--fuse sum``
            (every channel in one weighted sum).
        features: each explained node's activations, (K_i, h_i, w_i) float32.
        side: the clean values (batch of one) of the head's side inputs (the other tensors
            computed from the image that it reads).
        raw: each explained node's map as the model gave it (batch of one, its own layout):
            what perturbed maps do not hold (a transformer's prefix tokens) comes from it.
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
    side: Mapping[str, np.ndarray] = field(default_factory=dict)
    raw: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class Input:
    """One thing to explain: an image, or a prepared tensor (with an image or not)."""

    image: ImageLike | None
    tensor: np.ndarray | None = None


def inputs(
    images: Iterable[ImageLike | None] | None, tensors: Iterable[np.ndarray] | None
) -> list[Input]:
    """The images, or the tensors with the images alongside (or not), as inputs.

    Raises:
        ConfigError: tensors and images alongside differ in number.
    """
    if tensors is None:
        return [Input(image) for image in images or ()]
    given = list(tensors)
    alongside = list(images) if images is not None else [None] * len(given)
    if len(alongside) != len(given):
        raise ConfigError(f"{len(given)} tensors but {len(alongside)} images alongside")
    return [Input(i, t) for i, t in zip(alongside, given, strict=True)]


@dataclass(frozen=True)
class Loaded:
    """An input made ready for the activation pass."""

    source: str | None
    rgb: np.ndarray | None
    x: np.ndarray
    spec: preprocess.InputSpec
    preprocess_s: float
    given_tensor: bool = False
    geometry: Geometry | None = None


class ActivationPass:
    """Loads inputs for the prepared model and runs their clean pass through ``runner``.

    Args:
        prepared: the model, its input and the explained node(s).
        runner: the runner every pass goes through.
        max_pixels: refuse images with more pixels than this.
    """

    def __init__(self, prepared: Prepared, runner: Runner, *, max_pixels: int) -> None:
        self.prepared = prepared
        self.runner = runner
        self.max_pixels = max_pixels

    def load(self, image: ImageLike) -> Loaded:
        """Read (or take) an image and make the model input of it."""
        t0 = time.perf_counter()
        if isinstance(image, (str, Path)):
            source: str | None = str(image)
            rgb = preprocess.read_image(image, max_pixels=self.max_pixels)
        else:
            source = None
            rgb = preprocess.as_rgb(image)
        spec, norm = self.prepared.spec, self.prepared.norm
        x, geometry = preprocess.fit_tensor(rgb, spec, norm, self.prepared.resize)
        return Loaded(source, rgb, x, spec, time.perf_counter() - t0, geometry=geometry)

    def load_tensor(self, tensor: np.ndarray, image: ImageLike | None) -> Loaded:
        """A caller's model input, checked against what the model takes; the image, when
        given, is only for the overlay and the map's final size."""
        t0 = time.perf_counter()
        spec = modelinfo.tensor_spec(
            np.asarray(tensor), self.prepared.spec, dynamic_size=self.prepared.dynamic_size
        )
        loaded = self.load(image) if image is not None else None
        source = loaded.source if loaded else None
        rgb = loaded.rgb if loaded else None
        x = np.ascontiguousarray(tensor)
        geometry = None
        if rgb is not None:  # how the caller made the tensor is unknown: the image stretched
            geometry = Geometry.of("stretch", rgb.shape[:2], (spec.height, spec.width))
        return Loaded(
            source, rgb, x, spec, time.perf_counter() - t0, given_tensor=True, geometry=geometry
        )

    def forward(self, image: ImageLike | None = None, tensor: np.ndarray | None = None) -> Forward:
        """One input's clean pass; its error raises."""
        outcome = self.forward_many([Input(image, tensor)])[0]
        if isinstance(outcome, OnnxCamError):
            raise outcome
        return outcome

    def forward_many(self, inputs: Sequence[Input]) -> list[Forward | OnnxCamError]:
        """Activation passes of several inputs in shared batches; a bad one is its error
        (a :class:`ConfigError` raises)."""
        loaded = [self._loaded(given) for given in inputs]
        prepared = self.prepared
        model_outputs = tuple(o.name for o in prepared.outputs)
        features = prepared.feature_outputs
        side_outputs = dict(prepared.side_outputs)
        fetch = tuple(dict.fromkeys((*model_outputs, *features, *side_outputs.values())))
        good = [item for item in loaded if isinstance(item, Loaded)]
        feature = {
            name: f"the feature map of node '{cand.label}'"
            for name, cand in zip(features, prepared.candidates, strict=True)
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
                cand.layout.to_chw(values[name])[0]
                for name, cand in zip(features, prepared.candidates, strict=True)
            ]
            flat = _flat(prepared, maps, item.spec)
            if flat is not None:
                outcomes.append(flat)
                continue
            outcomes.append(
                Forward(
                    source=item.source,
                    rgb=item.rgb,
                    x=item.x,
                    outputs={name: values[name] for name in model_outputs},
                    acts=ops.stack_maps(maps).astype(np.float32),
                    preprocess_s=item.preprocess_s,
                    activation_s=done.run_s,
                    spec=item.spec,
                    given_tensor=item.given_tensor,
                    geometry=item.geometry,
                    groups=_groups(prepared, maps),
                    features=tuple(m.astype(np.float32, copy=False) for m in maps),
                    side={tensor: values[name] for tensor, name in side_outputs.items()},
                    raw=tuple(values[name] for name in features),
                )
            )
        return outcomes

    def _loaded(self, given: Input) -> Loaded | OnnxCamError:
        try:
            if given.tensor is not None:
                return self.load_tensor(given.tensor, given.image)
            if given.image is not None:
                return self.load(given.image)
            raise ConfigError("nothing to explain: pass an image or tensor=")
        except ConfigError:
            raise
        except OnnxCamError as exc:
            return exc


def _groups(prepared: Prepared, maps: Sequence[np.ndarray]) -> tuple[int, ...]:
    """Each node's channel count when several nodes are fused as equals, else ()."""
    if len(maps) < 2 or prepared.fuse == "sum":
        return ()
    return tuple(m.shape[0] for m in maps)


def _flat(
    prepared: Prepared, maps: Sequence[np.ndarray], spec: preprocess.InputSpec
) -> NodeError | None:
    """The error of the first node whose map has no spatial extent, else None."""
    for cand, m in zip(prepared.candidates, maps, strict=True):
        if min(m.shape[1:]) < 2:
            return NodeError(
                f"node '{cand.label}' gives a {m.shape[1]}×{m.shape[2]} map for an input "
                f"of {spec.height}×{spec.width}: no spatial layout to explain; "
                "pick an earlier node (see `onnxcam nodes`) or a larger --size"
            )
    return None


class References:
    """The clean outputs of reference images (an embedding target's ``ref=``), run once each
    through ``clean`` and shared by every image that names them."""

    def __init__(self, clean: ActivationPass) -> None:
        self._clean = clean
        self._cache: dict[str, Mapping[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __call__(self, image: str) -> Mapping[str, np.ndarray]:
        key = str(Path(image).resolve())
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = self._clean.forward(image).outputs
            with self._lock:
                cached = self._cache.setdefault(key, cached)
        return cached
