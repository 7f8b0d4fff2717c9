"""Backends: what opens a (rewritten) model and runs it for the runner, behind one protocol.

A backend opens a model's bytes with :class:`OpenOptions` and returns something the runner runs
(:class:`~onnxcam.runner.Runnable`); it says what serves it (the provider), how large a batch
suits it, whether a freed batch dimension is consistent, and how a worker with given CPUs and
GPUs should be configured. ONNX Runtime in-process (:mod:`onnxcam.backends.ort`, ``"ort"``) and
a predictor served elsewhere over HTTP (:mod:`onnxcam.backends.remote`, ``"remote"``); another
is one more module (exporting ``BACKEND``) and one line in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError
from ..runner import Runnable

if TYPE_CHECKING:
    from ..config import ExplainerConfig
    from ..graph import GraphIndex
    from ..preprocess import InputSpec

__all__ = ["BACKENDS", "BACKEND_NAMES", "Backend", "OpenOptions", "get_backend"]

#: The backends by name (what ``ExplainerConfig.backend`` takes): the module that serves each,
#: imported when first used.
BACKENDS = {"ort": "onnxcam.backends.ort", "remote": "onnxcam.backends.remote"}
BACKEND_NAMES = tuple(BACKENDS)


@dataclass(frozen=True)
class OpenOptions:
    """How to open a model: the device, threads and backend-specific settings.

    Attributes:
        device: ``auto``, ``cpu`` or ``cuda`` (ignored when ``providers`` is given).
        threads: intra-op threads (None: the backend's default).
        providers: execution providers exactly as the backend takes them, first must serve.
        session_options: backend session settings, a plain mapping.
        predictor: for the remote backend, ``HOST:PORT/MODEL`` of the served predictor.
        protocol: for the remote backend, ``v2`` (Open Inference Protocol) or ``v1``.
    """

    device: str = "auto"
    threads: int | None = None
    providers: tuple[Any, ...] | None = None
    session_options: Mapping[str, Any] | None = None
    predictor: str | None = None
    protocol: str = "v2"

    @classmethod
    def of(cls, config: ExplainerConfig) -> OpenOptions:
        return cls(
            config.device, config.threads, config.providers, config.session_options,
            config.predictor, config.predictor_protocol,
        )  # fmt: skip


class Backend(Protocol):
    """What opens and runs models for onnxcam."""

    name: str

    def notes(self) -> list[str]:
        """Things wrong with this backend's installation worth telling the user."""
        ...

    def open(self, model: bytes, options: OpenOptions) -> Runnable:
        """The model, ready to run.

        Raises:
            DeviceError: the device or provider asked for cannot serve (no silent fallback).
            ModelError: the backend cannot load the model.
        """
        ...

    def provider(self, opened: Runnable) -> str:
        """What serves ``opened`` (e.g. ``CPUExecutionProvider``), as the record names it."""
        ...

    def default_batch(self, index: GraphIndex, spec: InputSpec, opened: Runnable) -> int:
        """The batch size that suits ``opened``, for a model with these intermediate sizes."""
        ...

    def batch_consistent(
        self, opened: Runnable, spec: InputSpec, *, time_limit: float | None = None
    ) -> bool:
        """Whether a batch of several inputs gives what single runs give (a freed batch
        dimension is proven this way)."""
        ...

    def placed(self, config: ExplainerConfig, *, cpus: float, gpus: float) -> ExplainerConfig:
        """``config`` for a worker given ``cpus`` CPUs and ``gpus`` GPUs (threads, device)."""
        ...


def get_backend(name: str) -> Backend:
    """The backend named ``name``.

    Raises:
        ConfigError: no backend has that name (the valid names are listed).
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend '{name}'; valid: {', '.join(BACKEND_NAMES)}")
    backend: Backend = importlib.import_module(BACKENDS[name]).BACKEND
    return backend
