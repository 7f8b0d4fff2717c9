"""The ONNX Runtime session: provider choice, threads, quiet native logging."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import io
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError, DeviceError, ModelError, TimeLimitError
from .text import first_line

__all__ = [
    "DEVICES",
    "SESSION_OPTIONS",
    "ProviderSpec",
    "Session",
    "check_providers",
    "cuda_provider_options",
    "gpu_visible",
    "import_ort",
    "installed_runtimes",
    "provider_specs",
    "providers_for",
    "session_option_types",
    "session_settings",
]

DEVICES = ("auto", "cpu", "cuda")
_QUIET = 4  # ONNX Runtime log severity FATAL: errors come back as exceptions instead
_RUNTIME_DISTS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")
_INSTALL_HINT = (
    "pip install 'onnxcam[gpu]' (Linux/Windows x86_64, runs on CPU too) "
    "or pip install 'onnxcam[cpu]' (everywhere else)"
)


def installed_runtimes() -> list[str]:
    """Names of the ONNX Runtime distributions installed; more than one is a broken setup."""
    found = []
    for name in _RUNTIME_DISTS:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def import_ort() -> Any:
    """Import onnxruntime, or say exactly what to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise DeviceError(f"ONNX Runtime is not installed; run: {_INSTALL_HINT}") from exc
    # The library reports failures as exceptions; ONNX Runtime's own log lines would reach
    # the terminal (e.g. from a probe session that is expected to fail).
    onnxruntime.set_default_logger_severity(_QUIET)
    return onnxruntime


def gpu_visible() -> bool:
    """True when the CUDA driver loads and reports at least one device."""
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        try:
            return (
                lib.cuInit(0) == 0
                and lib.cuDeviceGetCount(ctypes.byref(count)) == 0
                and (count.value > 0)
            )
        except AttributeError:
            return False
    return False


def cuda_provider_options(
    *, device_id: int = 0, memory_limit_bytes: int | None = None
) -> dict[str, str]:
    """Options for ``CUDAExecutionProvider`` suited to repeated runs of one fixed shape.

    Exhaustive cuDNN algorithm search pays once per shape, and the masked passes reuse one
    shape; the arena grows only by what is requested, so it does not double past need.
    """
    options = {
        "device_id": str(device_id),
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": "1",
    }
    if memory_limit_bytes is not None:
        options["gpu_mem_limit"] = str(int(memory_limit_bytes))
    return options


def providers_for(
    device: str, available: Iterable[str], *, has_gpu: Callable[[], bool] = gpu_visible
) -> list[Any]:
    """The provider list for ``--device``.

    Raises:
        DeviceError: ``cuda`` was asked for and this ONNX Runtime build has no CUDA provider.
    """
    available = list(available)
    cuda = "CUDAExecutionProvider" in available
    if device not in DEVICES:
        raise DeviceError(f"unknown device '{device}'; valid: {', '.join(DEVICES)}")
    if device == "cuda" and not cuda:
        raise DeviceError(
            "--device cuda: this ONNX Runtime build has no CUDAExecutionProvider (it offers "
            f"{', '.join(available)}); install onnxruntime-gpu: pip install 'onnxcam[gpu]'"
        )
    if device == "cuda" or (device == "auto" and cuda and has_gpu()):
        return [("CUDAExecutionProvider", cuda_provider_options()), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


ProviderSpec = str | tuple[str, dict[str, Any]]

# SessionOptions properties that can be set and read back (so that they pickle as a mapping).
SESSION_OPTIONS = (
    "enable_cpu_mem_arena", "enable_mem_pattern", "enable_mem_reuse", "enable_profiling",
    "execution_mode", "execution_order", "graph_optimization_level", "inter_op_num_threads",
    "intra_op_num_threads", "log_severity_level", "log_verbosity_level", "logid",
    "optimized_model_filepath", "profile_file_prefix", "use_deterministic_compute",
    "use_per_session_threads",
)  # fmt: skip


def session_settings(options: Any) -> dict[str, Any]:
    """A ``SessionOptions`` (or a mapping of its property names to values, plus
    ``config_entries``: a mapping of session config keys to values) as a plain, picklable
    mapping. Only what differs from ONNX Runtime's defaults is kept. The values' types and
    ranges are checked by :func:`onnxcam.config.validate`.

    Raises:
        ConfigError: neither a ``SessionOptions`` nor a mapping; an unknown property name.
    """
    if isinstance(options, Mapping):
        unknown = [k for k in options if k not in (*SESSION_OPTIONS, "config_entries")]
        if unknown:
            raise ConfigError(
                f"unknown session option '{unknown[0]}'; valid: {', '.join(SESSION_OPTIONS)}, "
                "config_entries"
            )
        return dict(options)
    ort = import_ort()
    if not isinstance(options, ort.SessionOptions):
        raise ConfigError(
            "session_options must be an onnxruntime.SessionOptions or a mapping of its "
            f"properties (e.g. {{'intra_op_num_threads': 2}}), not {type(options).__name__}"
        )
    defaults = ort.SessionOptions()
    return {
        name: getattr(options, name)
        for name in SESSION_OPTIONS
        if getattr(options, name) != getattr(defaults, name)
    }


def session_option_types() -> dict[str, type]:
    """The type each property in :data:`SESSION_OPTIONS` takes: ``bool``, ``int``, ``str``
    or one of ONNX Runtime's enums (``ExecutionMode``, ...)."""
    defaults = import_ort().SessionOptions()
    return {name: type(getattr(defaults, name)) for name in SESSION_OPTIONS}


_PROVIDERS_HINT = (
    "e.g. ['CUDAExecutionProvider', 'CPUExecutionProvider'] or "
    "[('CUDAExecutionProvider', {'device_id': 0}), 'CPUExecutionProvider']"
)


def provider_specs(providers: Any) -> tuple[ProviderSpec, ...]:
    """``providers`` as ONNX Runtime takes them: each a name, or a ``(name, options)`` pair
    whose options map text keys to values (a list pair becomes a tuple, a mapping a dict).

    Raises:
        ConfigError: a single string (not a list of names), or an entry of neither form.
    """
    if isinstance(providers, (str, bytes)) or not isinstance(providers, Iterable):
        raise ConfigError(
            "providers must be a list of execution providers, each a name or a (name, "
            f"options) pair, {_PROVIDERS_HINT}; got {_shown(providers)}"
        )
    specs: list[ProviderSpec] = []
    for entry in providers:
        if isinstance(entry, str):
            specs.append(entry)
        elif (
            isinstance(entry, (tuple, list))
            and len(entry) == 2
            and isinstance(entry[0], str)
            and isinstance(entry[1], Mapping)
            and all(isinstance(key, str) for key in entry[1])
        ):
            specs.append((entry[0], dict(entry[1])))
        else:
            raise ConfigError(
                "each execution provider must be a name or a (name, {option: value}) pair, "
                f"{_PROVIDERS_HINT}; got {_shown(entry)}"
            )
    return tuple(specs)


def _shown(value: Any) -> str:
    return repr(value)[:80]


def check_providers(providers: Sequence[ProviderSpec], available: Sequence[str]) -> list[Any]:
    """The caller's providers, as ONNX Runtime takes them, when this build has them all.

    Raises:
        DeviceError: an empty list, or a provider this ONNX Runtime build does not have.
    """
    if not providers:
        raise DeviceError("the list of execution providers is empty")
    for provider in providers:
        name = provider if isinstance(provider, str) else provider[0]
        if name not in available:
            raise DeviceError(
                f"execution provider '{name}' is not in this ONNX Runtime build (it offers "
                f"{', '.join(available)})"
            )
    return [p if isinstance(p, str) else (p[0], dict(p[1])) for p in providers]


@dataclass(frozen=True)
class SessionInfo:
    """What serves: the provider ONNX Runtime really uses, and the thread count."""

    provider: str
    threads: int | None


class Session:
    """One ONNX Runtime session over a serialized model.

    Args:
        model_bytes: the serialized (already rewritten) model.
        device: ``auto``, ``cpu`` or ``cuda`` (ignored when ``providers`` is given).
        threads: intra-op threads for the CPU provider (None: ONNX Runtime's default).
        providers: execution providers exactly as ONNX Runtime takes them (names or
            ``(name, options)`` pairs); the first one must serve.
        session_options: ``SessionOptions`` properties to set (see :func:`session_settings`),
            applied after ``threads``.

    Raises:
        DeviceError: the provider asked for first cannot serve (no silent CPU fallback).
        ModelError: ONNX Runtime cannot load the model.
    """

    def __init__(
        self,
        model_bytes: bytes,
        *,
        device: str = "auto",
        threads: int | None = None,
        providers: Sequence[ProviderSpec] | None = None,
        session_options: Mapping[str, Any] | None = None,
    ):
        ort = import_ort()
        options = ort.SessionOptions()
        options.log_severity_level = _QUIET
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        # Between runs numpy builds the next masks; ONNX Runtime's workers spinning for work
        # meanwhile would take the cores it needs (masks 4.4 s against 0.5 s on DeiT-tiny).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        for name, value in (session_options or {}).items():
            if name == "config_entries":
                for key, entry in value.items():
                    options.add_session_config_entry(str(key), str(entry))
            else:
                setattr(options, name, value)
        available = ort.get_available_providers()
        if providers is not None:
            chosen = check_providers(providers, available)
        else:
            chosen = providers_for(device, available)
        try:
            # When a provider fails to start, ONNX Runtime's Python layer prints "EP Error ...
            # Falling back" before retrying; onnxcam reports that itself, below.
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                self._session = ort.InferenceSession(model_bytes, options, providers=chosen)
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot load the model: {first_line(exc)}") from exc
        served = self._session.get_providers()
        first = chosen[0] if isinstance(chosen[0], str) else chosen[0][0]
        if providers is not None and served[0] != first:
            raise DeviceError(
                f"execution provider {first} was asked for first, but ONNX Runtime serves with "
                f"{served[0]} (its libraries or device are missing); fix that install or ask "
                "for another provider"
            )
        if device == "cuda" and "CUDAExecutionProvider" not in served:
            raise DeviceError(
                "--device cuda: ONNX Runtime fell back to the CPU (CUDA or cuDNN libraries "
                "missing, or no GPU visible); fix the CUDA install or use --device cpu"
            )
        self.info = SessionInfo(provider=served[0], threads=threads)
        self.inputs = self._session.get_inputs()
        self.output_names = [o.name for o in self._session.get_outputs()]

    def run(
        self,
        feed: np.ndarray | Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        time_limit: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one batch through the first input (or the named inputs of a mapping); return the
        named outputs.

        With ``time_limit`` (seconds), a watchdog sets ONNX Runtime's ``RunOptions.terminate``
        when the time is up, and the run stops with a :class:`TimeLimitError` (ONNX Runtime
        reads the flag between operators: one long operator runs to its end). Callers that
        explain images use :class:`onnxcam.runner.Runner`, which batches, pads and checks the
        values; this is the bare call.
        """
        names = list(outputs or self.output_names)
        options = None
        watchdog = None
        if time_limit is not None:
            options = import_ort().RunOptions()
            options.log_severity_level = _QUIET
            watchdog = threading.Timer(max(0.0, time_limit), _terminate, (options,))
            watchdog.daemon = True
            watchdog.start()
        try:
            feeds = dict(feed) if isinstance(feed, Mapping) else {self.inputs[0].name: feed}
            values = self._session.run(names, feeds, options)
        except Exception as exc:
            if options is not None and options.terminate:
                raise TimeLimitError(
                    f"the model did not finish within the time limit ({time_limit:.3g} s left "
                    "for this image); raise --time-limit if it is only slow"
                ) from exc
            shown = ", ".join(f"'{name}' {tuple(value.shape)}" for name, value in feeds.items())
            if isinstance(feed, np.ndarray):
                shown = f"an input of shape {tuple(feed.shape)}"
            raise ModelError(f"ONNX Runtime failed on {shown}: {first_line(exc)}") from exc
        finally:
            if watchdog is not None:
                watchdog.cancel()
        return dict(zip(names, values, strict=True))


def _terminate(options: Any) -> None:
    options.terminate = True
