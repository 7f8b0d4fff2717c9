"""The ONNX Runtime backend (``"ort"``): an in-process :class:`~onnxcam.runtime.Session` per
model, the provider it really serves with, and batch sizes by device.

The session itself (provider choice, threads, quiet native logging, the time limit) is
:mod:`onnxcam.runtime`; this module is what the rest of onnxcam sees of it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from .. import modelinfo
from ..config import MAX_THREADS
from ..runner import Runnable
from ..runtime import Session, installed_runtimes
from . import OpenOptions

if TYPE_CHECKING:
    from ..config import ExplainerConfig
    from ..graph import GraphIndex
    from ..preprocess import InputSpec

__all__ = ["BACKEND", "OrtBackend", "device_batch"]

CUDA = "CUDAExecutionProvider"


def device_batch(provider: str) -> int:
    """Masked passes per run before the memory cap: a GPU wants larger batches."""
    return modelinfo.CUDA_BATCH if provider == CUDA else modelinfo.CPU_BATCH


class OrtBackend:
    """ONNX Runtime in this process."""

    name = "ort"

    def notes(self) -> list[str]:
        runtimes = installed_runtimes()
        if len(runtimes) <= 1:
            return []
        return [
            f"several ONNX Runtime builds are installed ({', '.join(runtimes)}); they "
            "overwrite each other's files: keep one (pip uninstall the others, reinstall it)"
        ]

    def open(self, model: bytes, options: OpenOptions) -> Session:
        return Session(
            model,
            device=options.device,
            threads=options.threads,
            providers=options.providers,
            session_options=options.session_options,
        )

    def provider(self, opened: Runnable) -> str:
        return str(_session(opened).info.provider)

    def default_batch(self, index: GraphIndex, spec: InputSpec, opened: Runnable) -> int:
        return modelinfo.batch_cap(index, spec, device_batch(self.provider(opened)))

    def batch_consistent(
        self, opened: Runnable, spec: InputSpec, *, time_limit: float | None = None
    ) -> bool:
        return modelinfo.batch_consistent(opened, spec, time_limit=time_limit)

    def placed(self, config: ExplainerConfig, *, cpus: float, gpus: float) -> ExplainerConfig:
        """ONNX Runtime ignores ``OMP_NUM_THREADS``: its intra-op threads are set to the CPUs
        given (unless the config sets them), and CUDA serves when there are GPUs (unless the
        config names its providers)."""
        # a node may claim more CPUs than it has (ray start --num-cpus): threads stay in range
        threads = config.threads or max(1, min(int(cpus), MAX_THREADS))
        if config.providers is None:
            device = "cuda" if gpus > 0 else ("cpu" if config.device == "auto" else config.device)
            return replace(config, threads=threads, device=device)
        return replace(config, threads=threads)


def _session(opened: Runnable) -> Session:
    if not isinstance(opened, Session):
        raise TypeError(f"the ONNX Runtime backend did not open {type(opened).__name__}")
    return opened


BACKEND = OrtBackend()
