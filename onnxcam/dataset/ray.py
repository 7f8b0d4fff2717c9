"""The Ray Data adapter: explain a whole dataset on an actor pool (``pip install 'onnxcam[ray]'``).

Two levels:

- :func:`explain_dataset` is composable: a ``ray.data.Dataset`` with a ``path`` column in, a
  lazy Dataset of result rows (:data:`~onnxcam.dataset.schema.ROW_SCHEMA`) out, the files written
  as the rows go; plug it into your own pipeline and write the rows wherever you like.
- :func:`run_job` is what ``onnxcam explain --engine ray`` runs: preflight, manifest, explain,
  write (``results.jsonl``, Parquet parts), reconcile (``results.parquet``, one row per input),
  ``summary.json`` and the report.

Workers are actors (``ActorPoolStrategy``), each with one :class:`~onnxcam.Explainer` built from
the picklable config, ONNX Runtime's intra-op threads set to the CPUs Ray gave the actor (ONNX
Runtime ignores ``OMP_NUM_THREADS``: two actors with the default threads would each take every
core) and CUDA when the actor has GPUs. Ray restarts an actor that dies and runs its batch again;
the crash ledger (:mod:`onnxcam.dataset.ledger`) makes those retries converge, so the retries Ray
may spend on one batch are bounded by ``1 + max_crashes × rows per block``.

Tested with Ray 2.55.1 and 2.60.0 (``pyproject.toml`` pins the range): ``max_restarts`` and
``max_task_retries`` still reach the actors as ``map_batches`` keyword arguments there.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import platform
import queue
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ClusterError, ConfigError, OnnxCamError

# First, so that a missing extra is one clear line, whichever module would have missed it.
try:
    import pyarrow as pa
    import ray
    import ray.data
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ClusterError(
        f"--engine ray needs Ray Data ({exc.name or exc} is missing): pip install 'onnxcam[ray]'"
    ) from None

from ..backends import get_backend
from ..config import ExplainerConfig, model_sha256
from ..confined import Confined
from ..explain import Explainer
from ..outdir import OutputFolder
from ..quiet import native_stderr_silenced
from ..render import build_report, write_atomic
from ..result import version
from ..targets import TargetLike
from ..text import first_line
from .job import IMAGES_PER_CALL, SUMMARY, JobOptions, JobSummary, Progress, write_summary
from .ledger import CrashLedger
from .manifest import is_uri
from .naming import job_stems
from .preflight import check_resources, sees_shared
from .table import (
    PARTS,
    TableWriter,
    finished_paths,
    latest_rows,
    quarantined,
    reconcile,
    status_counts,
)
from .worker import LEDGER, ExplainWorker, WorkerSettings

__all__ = [
    "JobOptions",
    "JobSummary",
    "Progress",
    "check_resources",
    "explain_dataset",
    "ray_session",
    "run_job",
]

MAX_BLOCKS = 10_000  # blocks of the manifest (tasks); more rows per block beyond that
FATAL = ("OutputError", "DeviceError")  # a row with one of these stops the job: all would fail


# ----------------------------------------------------------------- the composable adapter


class _Actor:
    """One worker of the pool: threads and device from what Ray gave this actor."""

    def __init__(
        self,
        config: ExplainerConfig,
        settings: WorkerSettings,
        target: Any,
        gpus: float,
    ) -> None:
        context = ray.get_runtime_context()
        cpus = float(context.get_assigned_resources().get("CPU", 1.0))
        config = get_backend(config.backend).placed(config, cpus=cpus, gpus=gpus)
        where = f"{ray.util.get_node_ip_address()}:{os.getpid()}"
        self.worker = ExplainWorker(config, settings, target=target, worker=where)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.worker(batch)


def explain_dataset(
    ds: ray.data.Dataset,
    explainer: Explainer | ExplainerConfig,
    *,
    out_dir: str | Path,
    target: TargetLike | Iterable[TargetLike] | None = None,
    workers: int | tuple[int, int] = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    max_crashes: int = 2,
    images_per_call: int = IMAGES_PER_CALL,
    rows_per_block: int | None = None,
    reserve_cpus: float = 1.0,
    alpha: float = 0.5,
    emphasize: float | None = None,
    thumbnails: bool = True,
) -> ray.data.Dataset:
    """Explain every row of ``ds`` on a pool of actors; lazy, like every Dataset transform.

    Args:
        ds: a Dataset with a ``path`` column (file paths every worker can read, or URIs that
            ``pyarrow.fs`` opens) and optionally ``stem`` (the output name; default: the path's
            name plus a hash of it), ``target`` (a spec per row, e.g. ``class:3``), ``label``
            and ``location`` (where to read the image when ``path`` is only its name).
        explainer: the Explainer (or its config) every actor rebuilds.
        out_dir: where the files go; every worker must see the same folder.
        target: the target of rows without one (default: the top class); must pickle.
        workers: a fixed pool size, or ``(min, max)`` to autoscale.
        cpus_per_worker: CPUs per actor, also ONNX Runtime's threads (unless the config sets
            ``threads``).
        gpus_per_worker: GPUs per actor (fractions share a GPU); the actor runs on CUDA.
        max_crashes: times an image may kill its actor when run alone before it becomes an
            error row.
        images_per_call: images per actor call, their masked passes sharing batches.
        rows_per_block: the rows of each block of ``ds`` at most (bounds Ray's retries of a
            block, which are ``1 + max_crashes × rows_per_block``); default
            ``images_per_call``, which a Dataset made by :func:`run_job` has.
        reserve_cpus: CPUs the pool leaves for the tasks that read ``ds`` (a pool that takes
            every CPU deadlocks them); checked against the cluster when Ray is running.
        alpha, emphasize, thumbnails: as for a local run.

    Returns:
        A Dataset of :data:`~onnxcam.dataset.schema.ROW_SCHEMA` rows, one per input row.

    Raises:
        ClusterError: a pool the running cluster cannot hold next to ``reserve_cpus``.
    """
    config = explainer.config if isinstance(explainer, Explainer) else explainer
    low, high = (workers, workers) if isinstance(workers, int) else workers
    if not 1 <= low <= high:
        raise ConfigError(f"workers must be N or (MIN, MAX) with 1 <= MIN <= MAX, got {workers}")
    if cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise ConfigError("cpus per worker must be positive and GPUs per worker not negative")
    if ray.is_initialized():
        check_resources(
            ray.cluster_resources(), workers=(low, high), cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker, reserve_cpus=reserve_cpus,
        )  # fmt: skip
    settings = WorkerSettings(
        out_dir=str(Path(out_dir).absolute()),
        alpha=alpha,
        emphasize=emphasize,
        thumbnails=thumbnails,
        max_crashes=max_crashes,
    )
    retries = 1 + max_crashes * max(images_per_call, rows_per_block or 0)
    with warnings.catch_warnings():  # max_restarts/max_task_retries have no named parameter yet
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(
            _Actor,
            batch_size=images_per_call,
            batch_format="pyarrow",
            zero_copy_batch=True,
            fn_constructor_kwargs={
                "config": config,
                "settings": settings,
                "target": target,
                "gpus": gpus_per_worker,
            },
            compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker or None,
            udf_modifying_row_count=False,
            max_restarts=-1,
            max_task_retries=retries,
        )


# ----------------------------------------------------------------- the session and preflight


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Ray for the length of the block: the running session if there is one, else a
    connection to ``address`` (or ``RAY_ADDRESS``), else a new local Ray on this machine
    (stopped after). Ray's own logging stays off the console except real errors."""
    if ray.is_initialized():
        yield
        return
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    # Ray's C++ core prints notices at error level on fd 2 while the job runs (every actor
    # pool that may restart its actors is warned about); a level you set yourself stays.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        with native_stderr_silenced():  # and a line saying so, as it starts
            ray.init(
                address=target,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                configure_logging=True,
            )
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = "a new local Ray" if target == "local" else f"Ray at {target}"
        raise ClusterError(f"cannot start {where}: {first_line(exc)}") from None
    try:
        yield
    finally:
        ray.shutdown()


_probe = ray.remote(num_cpus=0)(sees_shared)


def check_shared(out_dir: Path, files: list[str], *, timeout_s: float = 120.0) -> None:
    """Every node sees the output folder (a probe file written here), the model and the first
    local input; a cluster of this machine alone passes at once.

    Raises:
        ClusterError: a node that does not (the folder is not shared).
    """
    here = ray.get_runtime_context().get_node_id()
    client = ray.util.client.ray.is_connected()
    nodes = [n for n in ray.nodes() if n.get("Alive") and (client or n["NodeID"] != here)]
    if not nodes:
        return
    token = f".probe-{uuid.uuid4().hex}"
    write_atomic(out_dir / token, b"onnxcam\n")
    try:
        calls = {
            _probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(out_dir), token, files): n.get("NodeManagerAddress", "?")
            for n in nodes
        }
        ready, _ = ray.wait(list(calls), num_returns=len(calls), timeout=timeout_s)
        if len(ready) < len(calls):
            raise ClusterError(f"nodes did not answer a probe within {timeout_s:.0f} s")
        for call, node in calls.items():
            problem = ray.get(call)
            if problem:
                raise ClusterError(
                    f"node {node} {problem}: -o must be a folder every node mounts at the same "
                    "path (NFS, a shared volume), and inputs must be there too or be URIs"
                )
    finally:
        (out_dir / token).unlink(missing_ok=True)


# ----------------------------------------------------------------- the managed job


@contextlib.contextmanager
def _quiet_ray(log: BinaryIO) -> Iterator[None]:
    """Ray Data's progress bars, notices and deprecation warnings off; what Ray prints on
    stdout while the job runs (notices of dead workers, which the crash ledger handles) goes
    to ``log``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
        context = ray.data.DataContext.get_current()
        saved = {
            name: getattr(context, name)
            for name in ("enable_progress_bars", "print_on_execution_start", "max_errored_blocks")
        }
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.max_errored_blocks = -1  # a block Ray gives up on: lost rows, not a failure
        data_logger = logging.getLogger("ray.data")
        level = data_logger.level
        data_logger.setLevel(logging.ERROR)
        try:
            sink = io.TextIOWrapper(log, encoding="utf-8", errors="replace", write_through=True)
            try:
                with contextlib.redirect_stdout(sink):
                    yield
            finally:
                sink.detach()  # the caller closes the file
        finally:
            data_logger.setLevel(level)
            for name, value in saved.items():
                setattr(context, name, value)


def _cause(exc: BaseException) -> OnnxCamError:
    """The onnxcam error inside a Ray error, else a :class:`ClusterError` of its first line."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, OnnxCamError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return ClusterError(f"the Ray job failed: {first_line(exc)}")


class _Results:
    """The dataset's batches, pulled on a thread of their own so that the job's thread stays
    free to report progress, notice a stall and stop."""

    def __init__(self, ds: ray.data.Dataset) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=64)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._pump, args=(ds,), daemon=True, name="onnxcam-ray-results"
        )
        self._thread.start()

    def _pump(self, ds: ray.data.Dataset) -> None:
        batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
        try:
            for batch in batches:
                if not self._put(("rows", batch)):
                    return
            self._put(("end", None))
        except BaseException as exc:
            self._put(("error", exc))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()  # stops the streaming executor and its actors

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float) -> tuple[str, Any] | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        self._stop.set()


def _stall_reason() -> str:
    try:
        free = ray.available_resources()
        total = ray.cluster_resources()
    except Exception:  # the cluster itself may be what is gone
        return "the Ray cluster does not answer"
    shown = ", ".join(
        f"{name} {free.get(name, 0):g}/{total.get(name, 0):g} free" for name in ("CPU", "GPU")
    )
    return (
        f"{shown}: workers may be waiting for resources, or a model may never finish on an "
        "image (--time-limit stops those)"
    )


def run_job(
    manifest: pa.Table,
    explainer: Explainer,
    *,
    out_dir: Path,
    settings: Mapping[str, Any],
    target: TargetLike | Iterable[TargetLike] | None = None,
    options: JobOptions | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> JobSummary:
    """Explain every image of ``manifest`` (:mod:`onnxcam.dataset.manifest`) on Ray.

    Preflight (before any worker starts): the options, the output folder (a local or
    mounted folder every node sees: checked with a probe on each node), the pool against the
    cluster's CPUs and GPUs. Then the images not yet finished in ``out_dir`` (an anti-join on
    ``path`` with what is there) are explained; each row is appended to ``results.jsonl`` as
    it comes and kept in Parquet parts; at the end ``results.parquet`` has exactly one row
    per input, ``summary.json`` the counts, and the report is rebuilt.

    Args:
        manifest: the images (``path``, ``location``, ``target``, ``label``).
        explainer: built here (its config is what the workers rebuild).
        out_dir: the output folder.
        settings: what decides the files' contents (``run.json``'s fingerprint, as a local
            run's, so either engine continues the other's folder).
        target: the target of rows without one.
        options: how to run.
        on_progress: called every ``progress_every_s`` seconds and on a stall.

    Raises:
        ClusterError: Ray missing or unreachable, a pool that cannot run, a folder that is
            not shared.
        ConfigError, OutputError: bad options, an output folder that cannot be used.
    """
    options = options or JobOptions()
    options.validate()
    t0 = time.monotonic()
    if is_uri(str(out_dir)):
        raise ConfigError(
            f"-o {out_dir}: the output must be a folder (local, or mounted on every node, e.g. "
            "NFS); object-store outputs are not supported yet"
        )
    out_dir = Path(out_dir).absolute()
    paths = manifest.column("path").to_pylist()
    locations = manifest.column("location").to_pylist()
    local_inputs = [Path(loc) for loc in locations if not is_uri(loc)]
    state = out_dir / LEDGER
    config = replace(explainer.config, model=_absolute_model(explainer.config.model))
    with OutputFolder(
        out_dir, settings=settings, inputs=local_inputs, overwrite=options.overwrite
    ) as folder:
        _state_folders(folder.out)  # real folders inside OUT, never links out of it
        ledger = CrashLedger(state)
        if options.overwrite:
            ledger.clear()
            for name in ("results.parquet", SUMMARY):
                folder.out.unlink(name)
        _state_folders(folder.out)
        ledger.clear_inflight()
        latest = latest_rows(out_dir, state)
        wanted = set(paths)
        finished = (finished_paths(latest, out_dir) | set(folder.finished)) & wanted
        local_records = folder.finished_records(wanted)
        stems = job_stems(manifest, folder, latest, state, finished)
        keep = [i for i, p in enumerate(paths) if p not in finished]
        todo = manifest.take(pa.array(keep, pa.int64())).append_column(
            "stem", pa.array([stems[i] for i in keep], pa.string())
        )
        run = _Run(len(keep), len(finished), on_progress, options)
        writer = TableWriter(state, f"{time.time_ns():020d}-{os.getpid()}")
        pool = (0, 0)
        try:
            if todo.num_rows:
                log = folder.out.open_append(f"{LEDGER}/ray.log")
                with log, _quiet_ray(log), ray_session(options.address):
                    pool = check_resources(
                        ray.cluster_resources(),
                        workers=options.workers,
                        cpus_per_worker=options.cpus_per_worker,
                        gpus_per_worker=options.gpus_per_worker,
                    )
                    model = [str(config.model)] if isinstance(config.model, str) else []
                    check_shared(out_dir, model + [str(p) for p in local_inputs[:1]])
                    rows = max(options.images_per_call, math.ceil(todo.num_rows / MAX_BLOCKS))
                    blocks = math.ceil(todo.num_rows / rows)
                    pool = (min(pool[0], blocks), min(pool[1], blocks))
                    # from_items builds the blocks here, with no Ray task (from_arrow runs one
                    # per block, which waits when the cluster is busy)
                    ds = explain_dataset(
                        ray.data.from_items(todo.to_pylist(), override_num_blocks=blocks),
                        config,
                        out_dir=out_dir,
                        target=target,
                        workers=pool,
                        cpus_per_worker=options.cpus_per_worker,
                        gpus_per_worker=options.gpus_per_worker,
                        max_crashes=options.max_crashes,
                        images_per_call=options.images_per_call,
                        rows_per_block=rows,
                        reserve_cpus=0.0,  # the manifest is in this process: no read tasks
                        alpha=options.alpha,
                        emphasize=options.emphasize,
                        thumbnails=options.report,
                    )
                    run.consume(ds, folder, writer)
        finally:
            writer.close()
            table = reconcile(
                out_dir, state, manifest, finished=finished, produced=run.produced,
                local_records=local_records,
            )  # fmt: skip
        made = options.report and bool(run.produced or finished)
        report = str(build_report(out_dir)) if made else None
    counts = status_counts(table)
    wall = time.monotonic() - t0
    summary = JobSummary(
        inputs=len(paths),
        ok=counts["ok"],
        errors=counts["error"],
        lost=counts["lost"],
        skipped=len(finished),
        quarantined=quarantined(table),
        wall_s=wall,
        explained_s=run.explaining_s(),
        rate=run.rate(),
        workers=pool,
        table=str(out_dir / "results.parquet"),
        report=report,
        stopped=run.stopped,
        fatal=run.fatal,
        first_errors=run.first_errors,
    )
    write_summary(
        out_dir, summary, options, model_sha256=model_sha256(config.model), versions=_versions()
    )
    return summary


def _state_folders(out: Confined) -> None:
    """The job's state folders, made inside OUT (a link in their place is refused)."""
    for name in (LEDGER, f"{LEDGER}/inflight", f"{LEDGER}/crashes", f"{LEDGER}/{PARTS}"):
        out.mkdir(name)


def _absolute_model(model: str | bytes) -> str | bytes:
    """Workers may start in another folder (or on another machine): paths made absolute."""
    return model if isinstance(model, bytes) else str(Path(model).absolute())


class _Run:
    """The job's side of the stream: records, table parts, counts, progress, stall, stop."""

    def __init__(
        self,
        total: int,
        skipped: int,
        on_progress: Callable[[Progress], None] | None,
        options: JobOptions,
    ) -> None:
        self.total = total
        self.skipped = skipped
        self.on_progress = on_progress
        self.options = options
        self.produced: set[str] = set()
        self.ok = 0
        self.errors = 0
        self.first_errors: list[tuple[str, str]] = []
        self.stopped: str | None = None
        self.fatal: OnnxCamError | None = None
        self.started = time.monotonic()
        self.first_row: float | None = None
        self.last_row = self.started

    def explaining_s(self) -> float:
        return 0.0 if self.first_row is None else self.last_row - self.first_row

    def rate(self) -> float:
        span = self.last_row - self.started
        return len(self.produced) / span if span > 0 and self.produced else 0.0

    def consume(self, ds: ray.data.Dataset, folder: OutputFolder, writer: TableWriter) -> None:
        results = _Results(ds)
        options = self.options
        warn_after = min(60.0, options.stall_timeout_s / 4)
        last_report = time.monotonic()
        warned = False
        try:
            while True:
                item = results.get(timeout=0.2)
                now = time.monotonic()
                if item is not None:
                    kind, value = item
                    if kind == "end":
                        break
                    if kind == "error":
                        self.stopped = "failed"
                        self.fatal = _cause(value)
                        break
                    self._rows(value, folder, writer)
                    warned = False
                    if self.fatal is not None:
                        self.stopped = "fatal"
                        break
                idle = now - self.last_row
                if idle >= options.stall_timeout_s:
                    self.stopped = "stalled"
                    self.fatal = ClusterError(
                        f"no image finished in {idle:.0f} s ({_stall_reason()}); stopped. What "
                        "finished is kept: rerun with --resume"
                    )
                    break
                if idle >= warn_after and not warned:
                    warned = True
                    self._report(now, stalled=_stall_reason())
                    last_report = now
                elif now - last_report >= options.progress_every_s:
                    self._report(now)
                    last_report = now
        except KeyboardInterrupt:
            self.stopped = "interrupted"
        finally:
            results.stop()
        self._report(time.monotonic())

    def _rows(self, batch: pa.Table, folder: OutputFolder, writer: TableWriter) -> None:
        rows = batch.to_pylist()
        folder.record_many([json.loads(row.pop("record")) for row in rows])
        writer.add(rows)
        for row in rows:
            self.produced.add(row["path"])
            if row["status"] == "ok":
                self.ok += 1
                continue
            self.errors += 1
            if len(self.first_errors) < 20:
                self.first_errors.append((row["path"], row["error"] or ""))
            fatal = row["error_type"] in FATAL or (
                row["error_type"] == "ConfigError" and row["target"] is None
            )
            if fatal and self.fatal is None:
                self.fatal = _fatal(row["error_type"], row["error"] or "")
        self.last_row = time.monotonic()
        if self.first_row is None:
            self.first_row = self.last_row

    def _report(self, now: float, stalled: str | None = None) -> None:
        if self.on_progress is None:
            return
        self.on_progress(
            Progress(
                done=len(self.produced),
                total=self.total,
                errors=self.errors,
                skipped=self.skipped,
                elapsed_s=now - self.started,
                rate=self.rate(),
                idle_s=now - self.last_row,
                stalled=stalled,
            )
        )


def _fatal(error_type: str, message: str) -> OnnxCamError:
    from .. import errors

    kind = getattr(errors, error_type, OnnxCamError)
    return (
        kind(message)
        if isinstance(kind, type) and issubclass(kind, OnnxCamError)
        else (OnnxCamError(message))
    )


def _versions() -> dict[str, str]:
    found = {"onnxcam": version(), "ray": ray.__version__, "pyarrow": pa.__version__}
    for name in ("onnxruntime", "numpy"):
        module = sys.modules.get(name)
        found[name] = str(getattr(module, "__version__", "unknown"))
    found["python"] = platform.python_version()
    return found
