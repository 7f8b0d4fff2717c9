"""What a managed Ray job is asked and what it reports: its options, its progress and its
summary (``OUT/summary.json``). Plain data, no Ray, so the CLI and tests read them freely."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import JOB_LIMITS, check_rendering
from ..errors import ConfigError, OnnxCamError
from ..render import write_atomic
from .schema import RESULT_SCHEMA

__all__ = ["IMAGES_PER_CALL", "SUMMARY", "JobOptions", "JobSummary", "Progress", "write_summary"]

IMAGES_PER_CALL = 8  # images per actor call: their masked passes share batches
SUMMARY = "summary.json"


@dataclass(frozen=True, kw_only=True)
class JobOptions:
    """How :func:`~onnxcam.dataset.ray.run_job` runs (see
    :func:`~onnxcam.dataset.ray.explain_dataset` for the worker options).

    Attributes:
        address: the Ray cluster (``auto``, ``ray://host:port``); default ``RAY_ADDRESS``,
            else a new local Ray on this machine.
        workers: a fixed pool ``(N, N)`` or ``(MIN, MAX)``; default as many as fit.
        report: write ``index.html`` and ``contact_sheet.png`` at the end.
        overwrite: replace what the output folder holds, even if made with other settings.
        stall_timeout_s: stop the job when no image finished for this long (first warned at
            a quarter of it, at most a minute in).
        progress_every_s: seconds between progress reports.
    """

    address: str | None = None
    workers: tuple[int, int] | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_crashes: int = 2
    alpha: float = 0.5
    emphasize: float | None = None
    report: bool = True
    overwrite: bool = False
    stall_timeout_s: float = 600.0
    progress_every_s: float = 10.0
    images_per_call: int = IMAGES_PER_CALL

    def validate(self) -> None:
        """Every option in its range (:data:`onnxcam.config.JOB_LIMITS`), or a
        :class:`ConfigError` naming it."""
        for name, bounds in JOB_LIMITS.items():
            problem = bounds.problem(getattr(self, name))
            if problem:
                raise ConfigError(f"{name} {problem}")
        if self.workers is not None and not 1 <= self.workers[0] <= self.workers[1]:
            raise ConfigError(
                f"--workers must be N or MIN:MAX with 1 <= MIN <= MAX, got {self.workers}"
            )
        check_rendering(self.alpha, self.emphasize)


@dataclass(frozen=True)
class Progress:
    """Where a running job stands (passed to ``on_progress``).

    Attributes:
        done: images with a row in this run; errors: of those, failed.
        total: images this run has to do (finished ones skipped); skipped: those.
        elapsed_s: since the job started; rate: images per second since the first row.
        idle_s: since the last row; stalled: why nothing moves, once idle too long.
    """

    done: int
    total: int
    errors: int
    skipped: int
    elapsed_s: float
    rate: float
    idle_s: float
    stalled: str | None = None


@dataclass
class JobSummary:
    """What :func:`~onnxcam.dataset.ray.run_job` did; also written to ``OUT/summary.json``.

    ``stopped`` is None for a run that went through, else why it stopped early
    (``interrupted``, ``stalled``, or the error that would fail every image, which is in
    ``fatal``); what finished is kept either way and ``--resume`` continues.
    """

    inputs: int
    ok: int
    errors: int
    lost: int
    skipped: int
    quarantined: list[str]
    wall_s: float
    explained_s: float
    rate: float
    workers: tuple[int, int]
    table: str
    report: str | None
    stopped: str | None = None
    fatal: OnnxCamError | None = None
    first_errors: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("fatal")
        data["first_errors"] = [{"path": p, "error": e} for p, e in self.first_errors]
        return data


def write_summary(
    out_dir: Path,
    summary: JobSummary,
    options: JobOptions,
    *,
    model_sha256: str,
    versions: dict[str, str],
) -> None:
    """``OUT/summary.json``: the summary, the model's sha256, the versions that made it, the
    options that decide how it ran, and the table's column names."""
    data = {
        **summary.to_json(),
        "model_sha256": model_sha256,
        "versions": versions,
        "options": {
            "address": options.address or os.environ.get("RAY_ADDRESS") or "local",
            "cpus_per_worker": options.cpus_per_worker,
            "gpus_per_worker": options.gpus_per_worker,
            "max_crashes": options.max_crashes,
            "images_per_call": options.images_per_call,
        },
        "schema": RESULT_SCHEMA.names,
    }
    write_atomic(out_dir / SUMMARY, (json.dumps(data, indent=2) + "\n").encode())
