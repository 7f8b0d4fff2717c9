"""The Explainer's configuration: plain, frozen, picklable data, validated in one place.

That includes every method's settings: each method's :class:`~onnxcam.methods.Options` fields
declare their command-line flag and valid range (:func:`onnxcam.methods.knob`);
:func:`check_options` enforces them, :func:`method_options` builds a method's settings from a
preset and the flags given, and :func:`method_flags` lists the flags for the command line.
"""

from __future__ import annotations

import hashlib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from . import preprocess
from .backends import BACKEND_NAMES
from .errors import ConfigError
from .geometry import RESIZES
from .layouts import INPUT_LAYOUTS
from .methods import METHODS
from .methods.scorecam import BASELINES
from .preprocess import Normalization
from .runtime import ProviderSpec

__all__ = [
    "BASELINES",
    "PRESET_KEY",
    "ExplainerConfig",
    "Flag",
    "check_options",
    "method_flags",
    "method_options",
    "model_name",
    "model_sha256",
    "normalization",
    "preset_name",
    "unused_flags",
    "validate",
]

PRESET_KEY = "onnxcam.preset"
LAYOUTS = INPUT_LAYOUTS


@dataclass(frozen=True)
class ExplainerConfig:
    """Everything needed to rebuild an Explainer in another process (plain, picklable data);
    the keywords of :class:`onnxcam.Explainer`.

    Attributes:
        model: the ``.onnx`` file's path or the model's bytes (never modified; external data
            only with a path); :class:`onnxcam.Explainer` also takes an ``onnx.ModelProto``.
        node: ``auto``, a node name, or an output tensor name.
        preset: ``imagenet``, ``caffe``, ``tf``, ``unit`` or ``raw``; default: the model's
            ``onnxcam.preset`` metadata, else ``imagenet``.
        mean, std, scale, bgr: override parts of the preset.
        size: (height, width) when the model's input size is not static.
        layout: ``NCHW`` or ``NHWC`` to override detection.
        baseline: ``none``, ``zero``, ``black`` or ``blur`` (README: Score-CAM, the default method).
        batch_size: passes per run (default: from the model and a memory budget).
        threads: CPU threads for ONNX Runtime.
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
            :class:`TimeLimitError`.
        resize: how images are fitted into the input: ``stretch`` (the whole image resized
            to the input size) or ``letterbox`` (aspect ratio kept, padded with grey 114, as
            Ultralytics does); default: ``letterbox`` for YOLO-family detectors, else
            ``stretch``. Boxes and maps are mapped back to the image either way.
        backend: what opens and runs the model (:mod:`onnxcam.backends`): ``ort``, ONNX
            Runtime in this process, the only one so far.
    """

    model: str | bytes
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
    options: Any = None  # the method's Options; None: its official preset
    fp16: bool = False
    method: str = "scorecam"
    providers: tuple[ProviderSpec, ...] | None = None
    session_options: dict[str, Any] | None = None
    budget_s: float | None = None
    time_limit_s: float | None = None
    resize: str | None = None
    split_head: bool = False  # split off the head even when the method does not need it
    backend: str = "ort"


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
    if config.method not in METHODS:
        raise ConfigError(f"unknown method '{config.method}'; valid: {', '.join(METHODS)}")
    if config.options is not None:
        check_options(config.method, config.options)
    if config.baseline not in BASELINES:
        raise ConfigError(f"unknown baseline '{config.baseline}'; valid: {', '.join(BASELINES)}")
    if config.baseline != "none" and not METHODS[config.method].takes_baseline:
        takers = ", ".join(name for name, cls in METHODS.items() if cls.takes_baseline)
        raise ConfigError(
            f"method '{config.method}' takes no baseline (--baseline {config.baseline}); "
            f"methods that do: {takers}"
        )
    if config.preset is not None and config.preset not in preprocess.PRESETS:
        raise ConfigError(
            f"unknown preset '{config.preset}'; valid: {', '.join(preprocess.PRESETS)}"
        )
    if config.layout is not None and config.layout not in LAYOUTS:
        raise ConfigError(f"unknown layout '{config.layout}'; valid: {', '.join(LAYOUTS)}")
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
    if config.budget_s is not None and not config.budget_s > 0:
        raise ConfigError(f"the time budget must be positive seconds, got {config.budget_s}")
    if config.time_limit_s is not None and not config.time_limit_s > 0:
        raise ConfigError(f"the time limit must be positive seconds, got {config.time_limit_s}")
    if config.resize is not None and config.resize not in RESIZES:
        raise ConfigError(f"unknown resize '{config.resize}'; valid: {', '.join(RESIZES)}")
    if config.backend not in BACKEND_NAMES:
        raise ConfigError(f"unknown backend '{config.backend}'; valid: {', '.join(BACKEND_NAMES)}")
    if config.providers is not None and config.device != "auto":
        raise ConfigError("pass either a device or a list of execution providers, not both")


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
    for f in fields(cls.options_type):
        value = getattr(options, f.name)
        meta = f.metadata
        shown = meta.get("flag") or f.name
        if value is None or isinstance(value, bool):
            continue
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"unknown {shown} '{value}'; valid: {', '.join(choices)}")
        if "minimum" in meta and value < meta["minimum"]:
            raise ConfigError(f"{shown} must be at least {meta['minimum']:g}, got {value}")
        if "maximum" in meta and value > meta["maximum"]:
            raise ConfigError(f"{shown} must be at most {meta['maximum']:g}, got {value}")
        if "above" in meta and not value > meta["above"]:
            raise ConfigError(f"{shown} must be greater than {meta['above']:g}, got {value}")


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


def _flagged(cls: type) -> list[tuple[Any, type]]:
    """The fields of an options class that have a flag, with their plain types."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in fields(cls):
        if f.metadata.get("flag"):
            kind = hints[f.name]
            if isinstance(kind, types.UnionType):  # ``int | None``
                kind = next(a for a in typing.get_args(kind) if a is not type(None))
            found.append((f, kind))
    return found


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
