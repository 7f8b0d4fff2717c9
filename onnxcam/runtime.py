"""The ONNX Runtime session: provider choice, threads, quiet native logging."""

from __future__ import annotations

import ctypes
import importlib.metadata
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DeviceError, ModelError

__all__ = [
    "DEVICES",
    "Session",
    "cuda_provider_options",
    "gpu_visible",
    "import_ort",
    "installed_runtimes",
    "providers_for",
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


@dataclass(frozen=True)
class SessionInfo:
    """What serves: the provider ONNX Runtime really uses, and the thread count."""

    provider: str
    threads: int | None


class Session:
    """One ONNX Runtime session over a serialized model.

    Args:
        model_bytes: the serialized (already rewritten) model.
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: intra-op threads for the CPU provider (None: ONNX Runtime's default).
    """

    def __init__(self, model_bytes: bytes, *, device: str = "auto", threads: int | None = None):
        ort = import_ort()
        options = ort.SessionOptions()
        options.log_severity_level = _QUIET
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        providers = providers_for(device, ort.get_available_providers())
        try:
            self._session = ort.InferenceSession(model_bytes, options, providers=providers)
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot load the model: {_first_line(exc)}") from exc
        served = self._session.get_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in served:
            raise DeviceError(
                "--device cuda: ONNX Runtime fell back to the CPU (CUDA or cuDNN libraries "
                "missing, or no GPU visible); fix the CUDA install or use --device cpu"
            )
        self.info = SessionInfo(provider=served[0], threads=threads)
        self.inputs = self._session.get_inputs()
        self.output_names = [o.name for o in self._session.get_outputs()]

    def run(self, feed: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run one batch through the first input; return the named outputs.

        Callers that explain images use :class:`onnxcam.runner.Runner`, which batches, pads
        and checks the values; this is the bare call.
        """
        names = list(outputs or self.output_names)
        try:
            values = self._session.run(names, {self.inputs[0].name: feed})
        except Exception as exc:
            raise ModelError(
                f"ONNX Runtime failed on an input of shape {tuple(feed.shape)}: {_first_line(exc)}"
            ) from exc
        return dict(zip(names, values, strict=True))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
