"""The Explainer's configuration: plain, frozen, picklable data, validated in one place.

That includes every method's settings: each method's :class:`~onnxcam.methods.Options` fields
declare their command-line flag and valid range (:func:`onnxcam.methods.knob`);
:func:`check_options` enforces them, :func:`method_options` builds a method's settings from a
preset and the flags given, and :func:`method_flags` lists the flags for the command line.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

from . import preprocess
from .backends import BACKEND_NAMES
from .errors import ConfigError
from .geometry import RESIZES
from .layouts import INPUT_LAYOUTS
from .methods import METHODS
from .methods.scorecam import BASELINES
from .preprocess import Normalization
from .runtime import DEVICES, ProviderSpec, provider_specs, session_option_types

__all__ = [
    "BASELINES",
    "JOB_LIMITS",
    "LIMITS",
    "MAX_SECONDS",
    "MAX_THREADS",
    "PRESET_KEY",
    "RENDER_LIMITS",
    "Bounds",
    "ExplainerConfig",
    "Flag",
    "check_options",
    "check_rendering",
    "method_flags",
    "method_options",
    "model_name",
    "model_sha256",
    "normalization",
    "plain_numbers",
    "preset_name",
    "unused_flags",
    "validate",
]

PRESET_KEY = "onnxcam.preset"
LAYOUTS = INPUT_LAYOUTS


@dataclass(frozen=True)
class Bounds:
    """The valid values of a numeric setting: from ``low`` (excluded when ``low_open``) to
    ``high``, whole numbers only when ``integer``. NaN and the infinities are never valid:
    they mean no limit to no one, and the JSON of a record cannot hold them (``JSON.parse``
    rejects ``NaN`` and ``Infinity``)."""

    low: float
    high: float = math.inf
    low_open: bool = False
    integer: bool = False
    unit: str = ""  # ``seconds``: said after the range

    def describe(self) -> str:
        """``an integer from 1 to 1024``, ``a number above 0 and at most 604800 seconds``."""
        kind = "an integer" if self.integer else "a number"
        unit = f" {self.unit}" if self.unit else ""
        if self.high == math.inf and self.low == -math.inf:
            return f"{kind}{unit}" if self.integer else f"a finite number{unit}"
        if self.high == math.inf:
            kind = kind if self.integer else "a finite number"
            return f"{kind} {'above' if self.low_open else 'of at least'} {self.low:g}{unit}"
        if self.low_open:
            return f"{kind} above {self.low:g} and at most {self.high:g}{unit}"
        return f"{kind} from {self.low:g} to {self.high:g}{unit}"

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not valid (``must be ..., got ...``); None when it is."""
        kind = numbers.Integral if self.integer else numbers.Real
        number: Any = value  # integers compare exactly, however large (nothing overflows)
        if (
            isinstance(value, kind)
            and not isinstance(value, bool)
            and (self.integer or math.isfinite(number))
            and (number > self.low if self.low_open else number >= self.low)
            and number <= self.high
        ):
            return None
        shown = str(value) if isinstance(value, numbers.Number) else repr(value)
        return f"must be {self.describe()}, got {shown[:80]}"


#: Seconds that a time budget or a time limit may be: far more than any image needs (a
#: week), and within what a timer thread can wait (Python refuses ``inf``).
MAX_SECONDS = 7 * 24 * 3600.0


def _cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


#: ONNX Runtime threads: at most four per CPU this process may use. Threads beyond the CPUs
#: only take turns: on 2 CPUs, 64 threads made a job 17 times slower, 1024 nearly a thousand
#: times (and 100 000 took 3.5 GB); the slack keeps a setting made for a somewhat larger
#: machine usable here.
MAX_THREADS = 4 * _cpus()
#: Normalisation: presets in pixel and unit scale lie well inside ±1e6, and with
#: ``std`` at least 1e-6 the model's input, ``(pixel * scale - mean) / std``, stays far
#: inside float32 (no overflow to infinity before the model even runs).
_NORM = 1e6


def setting(
    default: Any,
    *,
    flag: str | None = None,
    help: str = "",
    bounds: Bounds | None = None,
    choices: Sequence[str] | None = None,
    cli: str = "value",
    metavar: str | None = None,
) -> Any:
    """One setting of :class:`ExplainerConfig`, declared once: its default, its valid values
    (``bounds`` or ``choices``: :func:`validate` checks them) and, with ``flag``, its
    command-line option (its ``help``; ``cli`` says how the option reads its text:
    ``value``, ``floats``, ``size``, ``names``, ``path``, ``flag`` or ``switch``). The
    command line (:mod:`onnxcam.cli.common`) makes its options from these declarations."""
    meta: dict[str, Any] = {"flag": flag, "help": help, "bounds": bounds, "cli": cli}
    meta["metavar"] = metavar
    meta["choices"] = None if choices is None else tuple(choices)
    return field(default=default, metadata=meta)


#: How the maps of several nodes combine (``ExplainerConfig.fuse``).
FUSE_RULES = ("equal", "sum")

_SIDE = Bounds(1, integer=True)  # pixels; modelinfo names the largest side it takes

#: How results are drawn (:meth:`onnxcam.Result.save`): the map's weight in the overlay, and
#: the threshold of the emphasized overlay's sigmoid.
RENDER_LIMITS: dict[str, Bounds] = {"alpha": Bounds(0, 1), "emphasize": Bounds(0, 1)}


#: The options of a job on Ray (:class:`onnxcam.scale.job.JobOptions`): no node has more CPUs
#: or GPUs than these bounds (the preflight refuses what the cluster lacks); an image that
#: killed its worker a thousand times will again.
JOB_LIMITS: dict[str, Bounds] = {
    "cpus_per_worker": Bounds(0, 1024, low_open=True),
    "gpus_per_worker": Bounds(0, 1024),
    "max_crashes": Bounds(1, 1000, integer=True),
    "stall_timeout_s": Bounds(0, MAX_SECONDS, low_open=True, unit="seconds"),
}


def check_rendering(alpha: float, emphasize: float | None) -> None:
    """``alpha`` and ``emphasize`` (None: no emphasized overlay) in range.

    Raises:
        ConfigError: naming the setting and its valid range.
    """
    for name, value in (("alpha", alpha), ("emphasize", emphasize)):
        problem = None if value is None else RENDER_LIMITS[name].problem(value)
        if problem:
            raise ConfigError(f"{name} {problem}")


@dataclass(frozen=True)
class ExplainerConfig:
    """Everything needed to rebuild an Explainer in another process (plain, picklable data);
    the keywords of :class:`onnxcam.Explainer`.

    Attributes:
        model: the ``.onnx`` file's path or the model's bytes (never modified; external data
            only with a path); :class:`onnxcam.Explainer` also takes ``bytearray``,
            ``memoryview``, a path-like object and an ``onnx.ModelProto``.
        node: ``auto``, a node name, or an output tensor name.
        fuse: how the maps of several nodes (a detector's scales under ``auto``, or
            ``a,b,c``) combine: ``equal`` (each node's map from its own channels, scaled to a
            maximum of 1, averaged; a fast mode's channels shared equally among the nodes) or
            ``sum`` (one weighted sum over every channel of every node, the rule before
            ``equal``). README, "Detectors and segmenters", compares them.
        preset: ``imagenet``, ``caffe``, ``tf``, ``unit`` or ``raw``; default: the model's
            ``onnxcam.preset`` metadata, else ``imagenet``.
        mean, std, scale, bgr: override parts of the preset (ranges: :data:`LIMITS`, which
            keep the model's input finite in float32).
        size: (height, width) when the model's input size is not static.
        layout: ``NCHW`` or ``NHWC`` to override detection.
        baseline: ``none``, ``zero``, ``black`` or ``blur`` (README: Score-CAM, the default method).
        batch_size: passes per run (default: from the model and a memory budget).
        threads: CPU threads for ONNX Runtime, at most 4 per CPU this process may use
            (:data:`MAX_THREADS`).
        device: ``auto``, ``cpu`` or ``cuda``.
        labels: a labels file or a sequence of names (default: the model's metadata).
        max_pixels: refuse images with more pixels than this.
        options: the method's settings, e.g. :class:`ScoreCamOptions` for ``scorecam``,
            :class:`~onnxcam.methods.RiseOptions` for ``rise`` (default: its ``official``
            preset).
        fp16: run the model in float16 (inputs and outputs stay float32); meant for CUDA.
        method: the saliency method: a name in :data:`onnxcam.METHODS` (``scorecam``, the
            default; ``sscam``, ``iscam``, ``groupcam``, ``ablation``, ``recipro``, ``cam``,
            ``eigencam``, ``rise``, ``activation``).
        split_head: split off the model's head after the node even when ``method`` does not
            run on it (``ablation``, ``recipro`` and ``cam`` do), so that
            :meth:`Explainer.method_maps <onnxcam.Explainer.method_maps>` and
            :func:`onnxcam.evaluate.evaluate` can run those methods
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
        backend: what opens and runs the model (:mod:`onnxcam.backends`): ``ort``, ONNX
            Runtime in this process, or ``remote``, a predictor served elsewhere.
        predictor: the remote backend's predictor, ``HOST:PORT/MODEL``.
        predictor_protocol: how the remote backend talks to it: ``v2`` or ``v1``.
    """

    model: str | bytes
    # The fields with a flag are the command line's options, in this order (onnxcam.cli).
    node: str = setting("auto", flag="--node", help="Node name, tensor name, or auto.")
    fuse: str = setting(
        "equal",
        flag="--fuse",
        choices=FUSE_RULES,
        help="With several nodes (a detector's scales, --node a,b,c): equal (one map per node "
        "from its own channels, averaged) or sum (one weighted sum over every channel).",
    )
    preset: str | None = setting(
        None,
        flag="--preset",
        choices=tuple(preprocess.PRESETS),
        help="Input normalisation (default: the model's metadata, else imagenet).",
    )
    mean: tuple[float, ...] | None = setting(
        None,
        flag="--mean",
        cli="floats",
        bounds=Bounds(-_NORM, _NORM),
        help="Per-channel mean, e.g. 0.485,0.456,0.406.",
    )
    std: tuple[float, ...] | None = setting(
        None,
        flag="--std",
        cli="floats",
        bounds=Bounds(1 / _NORM, _NORM),
        help="Per-channel std, e.g. 0.229,0.224,0.225.",
    )
    scale: float | None = setting(
        None,
        flag="--scale",
        bounds=Bounds(0, _NORM, low_open=True),
        help="Pixel (0..255) multiplier applied before mean/std.",
    )
    bgr: bool | None = setting(
        None, flag="--bgr/--rgb", cli="switch", help="Colour order the model expects."
    )
    size: tuple[int, int] | None = setting(
        None,
        flag="--size",
        cli="size",
        help="Input size HxW (224 or 224x320) when the model's is dynamic.",
    )
    layout: str | None = setting(
        None, flag="--layout", choices=INPUT_LAYOUTS, help="Override layout detection."
    )
    resize: str | None = setting(
        None,
        flag="--resize",
        choices=RESIZES,
        help="Fit images by stretching or letterboxing (default: letterbox for YOLO-family "
        "detectors, else stretch).",
    )
    baseline: str = setting(
        "none",
        flag="--baseline",
        choices=BASELINES,
        help="Score subtracted from each masked score (scorecam, sscam, iscam).",
    )
    budget_s: float | None = setting(
        None,
        flag="--budget",
        metavar="SECONDS",
        bounds=Bounds(0, MAX_SECONDS, low_open=True, unit="seconds"),
        help="Anytime Score-CAM: run the most promising masks first and stop after this many "
        "seconds per image (the record estimates the fidelity).",
    )
    time_limit_s: float | None = setting(
        None,
        flag="--time-limit",
        metavar="SECONDS",
        bounds=Bounds(0, MAX_SECONDS, low_open=True, unit="seconds"),
        help="Stop an image whose passes take longer (a model that never finishes). ONNX "
        "Runtime stops between operators: one operator that runs longer (e.g. a huge "
        "convolution) finishes first.",
    )
    batch_size: int | None = setting(
        None, flag="--batch-size", bounds=Bounds(1, integer=True), help="Masked passes per run."
    )
    threads: int | None = setting(
        None,
        flag="--threads",
        bounds=Bounds(1, MAX_THREADS, integer=True),
        help=f"CPU threads for ONNX Runtime (at most 4 per CPU: {MAX_THREADS} here).",
    )
    device: str = setting("auto", flag="--device", choices=DEVICES, help="Where the model runs.")
    providers: tuple[ProviderSpec, ...] | None = setting(
        None,
        flag="--providers",
        cli="names",
        metavar="EP[,EP...]",
        help="ONNX Runtime execution providers in order, instead of --device, e.g. "
        "TensorrtExecutionProvider,CUDAExecutionProvider; the first must serve.",
    )
    fp16: bool = setting(
        False,
        flag="--fp16",
        cli="flag",
        help="Run the model in float16 (for CUDA; needs onnxcam[fp16]).",
    )
    labels: str | tuple[str, ...] | None = setting(
        None, flag="--labels", cli="path", help="Class names: one per line, or JSON."
    )
    max_pixels: int = setting(
        preprocess.DEFAULT_MAX_PIXELS,
        flag="--max-pixels",
        bounds=Bounds(1, integer=True),
        help="Refuse images larger than this many pixels.",
    )
    # Set by the command (--method, --compat and the method's flags) or by the API alone.
    method: str = setting("scorecam", choices=tuple(METHODS))
    options: Any = None  # the method's Options; None: its official preset
    session_options: dict[str, Any] | None = None
    split_head: bool = False  # split off the head even when the method does not need it
    backend: str = setting(
        "ort",
        flag="--backend",
        choices=BACKEND_NAMES,
        help="What opens and runs the model: ort (ONNX Runtime in this process) or remote (a "
        "served predictor, --predictor-host).",
    )
    predictor: str | None = setting(
        None,
        flag="--predictor-host",
        metavar="HOST:PORT/MODEL",
        help="The predictor that runs the passes (with --backend remote; implies it on the "
        "command line): it serves the model that `onnxcam export --expose` writes.",
    )
    predictor_protocol: str = setting(
        "v2",
        flag="--predictor-protocol",
        choices=("v2", "v1"),
        help="How to talk to the predictor: v2 (Open Inference Protocol) or v1 (KServe V1).",
    )


#: The range of each numeric field of :class:`ExplainerConfig` (``mean`` and ``std``: of
#: each of their values), from the fields' declarations.
LIMITS: dict[str, Bounds] = {
    f.name: f.metadata["bounds"] for f in fields(ExplainerConfig) if f.metadata.get("bounds")
}


def settings_with_flags() -> list[Field[Any]]:
    """The settings that are command-line options, in the order the declaration gives."""
    return [f for f in fields(ExplainerConfig) if f.metadata.get("flag")]


def plain_numbers(values: Any, *, integer: bool = False) -> tuple[Any, ...]:
    """``values`` (a number, or an iterable of them) as a tuple of plain Python numbers, so
    that a config pickles and records as JSON; anything that is not a number (or, with
    ``integer``, not a whole one) is kept as it is, for :func:`validate` to name."""
    single = isinstance(values, (str, bytes)) or not isinstance(values, Iterable)
    return tuple(_plain(v, integer) for v in ((values,) if single else values))


def _plain(value: Any, integer: bool) -> Any:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    number = float(value)
    if not integer:
        return number
    return int(number) if number.is_integer() else value  # nan and inf are not integers


def model_sha256(model: str | bytes) -> str:
    """sha256 of the model's bytes (read from its file, in chunks, when it is a path)."""
    digest = hashlib.sha256()
    if isinstance(model, bytes):
        digest.update(model)
    else:
        with open(model, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_name(model: str | bytes) -> str:
    """How the record names a model: its path, or ``sha256:...`` of the bytes it came as."""
    if isinstance(model, bytes):
        return "sha256:" + model_sha256(model)
    return model


def validate(config: ExplainerConfig) -> None:
    """Every option in range, or a :class:`ConfigError` naming it and what is valid."""
    if not isinstance(config.model, (str, bytes)):
        raise ConfigError(
            "the model must be a path, the model's bytes or an onnx.ModelProto, not "
            f"{type(config.model).__name__}"
        )
    for f in fields(config):  # the declared choices
        value, choices = getattr(config, f.name), f.metadata.get("choices")
        if choices is not None and value is not None and value not in choices:
            raise ConfigError(f"unknown {f.name} '{value}'; valid: {', '.join(choices)}")
    if config.options is not None:
        check_options(config.method, config.options)
    if config.baseline != "none" and not METHODS[config.method].takes_baseline:
        takers = ", ".join(name for name, cls in METHODS.items() if cls.takes_baseline)
        raise ConfigError(
            f"method '{config.method}' takes no baseline (--baseline {config.baseline}); "
            f"methods that do: {takers}"
        )
    for name, bounds in LIMITS.items():
        value = getattr(config, name)
        if value is None:
            continue
        shown, values = name, [value]
        if name in ("mean", "std"):  # 1 or 3 values, each in range
            if len(value) not in (1, 3):
                raise ConfigError(f"{name} needs 1 or 3 values, got {len(value)}")
            shown, values = f"each {name} value", list(value)
        problem = next(filter(None, map(bounds.problem, values)), None)
        if problem:
            raise ConfigError(f"{shown} {problem}")
    if config.size is not None:
        if len(config.size) != 2:
            raise ConfigError(f"size needs 2 values (height, width), got {len(config.size)}")
        problem = next(filter(None, map(_SIDE.problem, config.size)), None)
        if problem:
            raise ConfigError(f"each size value {problem}")
    if config.providers is not None:
        provider_specs(config.providers)
        if config.device != "auto":
            raise ConfigError("pass either a device or a list of execution providers, not both")
    if config.session_options is not None:
        _check_session_options(config.session_options)
    if (config.backend == "remote") != (config.predictor is not None):
        raise ConfigError(
            "the remote backend and a predictor go together: backend 'remote' with "
            "predictor HOST:PORT/MODEL (--predictor-host), or neither"
        )


#: The integer session options' ranges: 0 threads is ONNX Runtime's default; log severity
#: -1 is the default logger's, then 0 (verbose) to 4 (fatal).
_SESSION_INTS = {
    "intra_op_num_threads": Bounds(0, MAX_THREADS, integer=True),
    "inter_op_num_threads": Bounds(0, MAX_THREADS, integer=True),
    "log_severity_level": Bounds(-1, 4, integer=True),
    "log_verbosity_level": Bounds(0, 1000, integer=True),
}


def _check_session_options(options: Any) -> None:
    """Each session option's value is of its property's type and in range."""
    if not isinstance(options, Mapping):
        raise ConfigError(f"session_options must be a mapping, not {type(options).__name__}")
    kinds = session_option_types()
    for name, value in options.items():
        if name == "config_entries":
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise ConfigError(
                    "session option config_entries must be a mapping of session config keys "
                    "to values, e.g. {'session.intra_op.allow_spinning': '0'}"
                )
            continue
        if name not in kinds:
            raise ConfigError(
                f"unknown session option '{name}'; valid: {', '.join(kinds)}, config_entries"
            )
        kind = kinds[name]
        if name in _SESSION_INTS:
            problem = _SESSION_INTS[name].problem(value)
        elif isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            problem = None
        else:
            what = {bool: "True or False", str: "text"}.get(kind, f"an onnxruntime.{kind.__name__}")
            problem = f"must be {what}, got {value!r:.80}"
        if problem:
            raise ConfigError(f"session option {name} {problem}")


def preset_name(config: ExplainerConfig, metadata: Mapping[str, str], default: str) -> str:
    """The preset in force: the config's, else the model's metadata, else ``default``."""
    return config.preset or metadata.get(PRESET_KEY) or default


def normalization(
    config: ExplainerConfig, metadata: Mapping[str, str], *, default: str = "imagenet"
) -> Normalization:
    """The preset (the config's, else the model's metadata, else ``default``) with the
    config's overrides applied."""
    name = preset_name(config, metadata, default)
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


# ----------------------------------------------------------------------------- method settings


def check_options(method: str, options: Any) -> None:
    """``options`` are settings of ``method`` and every field is in its declared range.

    Raises:
        ConfigError: the wrong settings class, or a field out of range (named by its flag).
    """
    cls = METHODS[method]
    if not isinstance(options, cls.options_type):
        raise ConfigError(
            f"method '{method}' takes {cls.options_type.__name__}, not {type(options).__name__}"
        )
    for f, kind in _typed(cls.options_type):
        value = getattr(options, f.name)
        meta = f.metadata
        shown = meta.get("flag") or f.name
        if value is None or isinstance(value, bool):
            continue
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"unknown {shown} '{value}'; valid: {', '.join(choices)}")
        if kind in (int, float):
            problem = _knob_bounds(meta, integer=kind is int).problem(value)
            if problem:
                raise ConfigError(f"{shown} {problem}")


def _knob_bounds(meta: Mapping[str, Any], *, integer: bool) -> Bounds:
    """A method setting's range, from its :func:`~onnxcam.methods.knob`."""
    above = meta.get("above")
    low = above if above is not None else meta.get("minimum", -math.inf)
    return Bounds(low, meta.get("maximum", math.inf), low_open=above is not None, integer=integer)


@dataclass(frozen=True)
class Flag:
    """A command-line option that sets a field of some methods' settings.

    Attributes:
        flag: ``--samples``.
        type: ``int``, ``float`` or ``str``.
        choices: the valid values of a ``str`` flag.
        help: per method that takes it, what it sets and its default.
        methods: the methods that take it.
    """

    flag: str
    type: type
    choices: tuple[str, ...] | None
    help: str
    methods: tuple[str, ...]

    @property
    def dest(self) -> str:
        """The keyword the command receives it as."""
        return self.flag.lstrip("-").replace("-", "_")


def _typed(cls: type) -> list[tuple[Any, type]]:
    """The fields of an options class with their plain types (``int`` for ``int | None``)."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in fields(cls):
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        found.append((f, kind))
    return found


def _flagged(cls: type) -> list[tuple[Any, type]]:
    """The fields of an options class that have a flag, with their plain types."""
    return [(f, kind) for f, kind in _typed(cls) if f.metadata.get("flag")]


def method_flags() -> list[Flag]:
    """Every flag of every method's settings, in the order the methods are registered (methods
    whose field means the same, with the same default, share one line of help)."""
    seen: dict[str, dict[str, Any]] = {}
    for name, cls in METHODS.items():
        default = cls.presets["official"]
        for f, kind in _flagged(cls.options_type):
            entry = seen.setdefault(
                f.metadata["flag"],
                {"type": kind, "choices": f.metadata.get("choices"), "help": {}, "methods": []},
            )
            value = getattr(default, f.name)
            text = f"{f.metadata['help']} ({'all' if value is None else value})"
            entry["help"].setdefault(text, []).append(name)
            entry["methods"].append(name)
    return [
        Flag(
            flag,
            e["type"],
            e["choices"],
            "; ".join(f"{', '.join(names)}: {text}" for text, names in e["help"].items()) + ".",
            tuple(e["methods"]),
        )
        for flag, e in seen.items()
    ]


def method_options(
    method: str,
    *,
    compat: str = "official",
    flags: Mapping[str, Any] | None = None,
    strict: bool = True,
) -> Any:
    """``method``'s settings: its preset ``compat`` with the flags given (values not None).

    Args:
        method: a registered method.
        compat: the preset.
        flags: flag (``--samples``) -> value; None values are ignored.
        strict: refuse a flag the method does not take (else ignore it: ``evaluate`` gives
            every method the flags that apply to it).

    Raises:
        ConfigError: unknown method or preset, a flag the method does not take, a value out
            of range.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method '{method}'; valid: {', '.join(METHODS)}")
    cls = METHODS[method]
    if compat not in cls.presets:
        having = [name for name, c in METHODS.items() if compat in c.presets]
        raise ConfigError(
            f"method '{method}' has no --compat {compat} (it has {', '.join(cls.presets)}); "
            f"methods with one: {', '.join(having) or 'none'}"
        )
    settings = cls.presets[compat]
    fields_by_flag = {f.metadata["flag"]: f.name for f, _ in _flagged(cls.options_type)}
    changes = {}
    for flag, value in (flags or {}).items():
        if value is None:
            continue
        if flag in fields_by_flag:
            changes[fields_by_flag[flag]] = value
        elif strict:
            takers = next((f.methods for f in method_flags() if f.flag == flag), ())
            raise ConfigError(
                f"method '{method}' takes no {flag}; "
                + (f"methods that do: {', '.join(takers)}" if takers else "no method does")
            )
    settings = replace(settings, **changes)
    check_options(method, settings)
    return settings


def unused_flags(methods: Sequence[str], flags: Mapping[str, Any]) -> list[str]:
    """The flags given (not None) that none of ``methods`` takes."""
    taken = {
        f.metadata["flag"] for name in methods for f, _ in _flagged(METHODS[name].options_type)
    }
    return [flag for flag, value in flags.items() if value is not None and flag not in taken]
