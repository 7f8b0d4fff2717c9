"""The Explainer's configuration: plain, frozen, picklable data, validated in one place."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import preprocess
from .errors import ConfigError
from .geometry import RESIZES
from .methods import METHODS
from .methods.scorecam import BASELINES, ScoreCamOptions
from .preprocess import Normalization
from .runtime import ProviderSpec

__all__ = [
    "BASELINES",
    "PRESET_KEY",
    "ExplainerConfig",
    "model_name",
    "model_sha256",
    "normalization",
    "preset_name",
    "validate",
]

PRESET_KEY = "onnxcam.preset"
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class ExplainerConfig:
    """Everything needed to rebuild an Explainer in another process (plain, picklable data).

    See :class:`onnxcam.Explainer` for the meaning of each field.
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
    options: ScoreCamOptions = field(default_factory=ScoreCamOptions)
    fp16: bool = False
    method: str = "scorecam"
    providers: tuple[ProviderSpec, ...] | None = None
    session_options: dict[str, Any] | None = None
    budget_s: float | None = None
    time_limit_s: float | None = None
    resize: str | None = None


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
    if config.baseline not in BASELINES:
        raise ConfigError(f"unknown baseline '{config.baseline}'; valid: {', '.join(BASELINES)}")
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
