"""The worker: a batch of manifest rows in, one result row per image out, files written.

Plain Python (no Ray): :mod:`onnxcam.dataset.ray` wraps it in an actor, and anything else that
runs callables over batches could too. One :class:`~onnxcam.Explainer` per worker, built from
the picklable config; the images of a batch share their masked passes
(:meth:`~onnxcam.Explainer.explain_many`). Every image gets its files (the same names and
contents as a local run: :meth:`~onnxcam.Result.save`) and one row; a bad image is an ``error``
row and never takes its neighbours with it; an image that kills the worker is retried alone and
quarantined after ``max_crashes`` (:mod:`onnxcam.dataset.ledger`).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

from ..config import ExplainerConfig
from ..confined import Confined
from ..errors import ConfigError, ImageError, OnnxCamError
from ..explain import Explainer
from ..images import HEADER_BYTES, decode_image
from ..result import Result
from ..targets import TargetLike, parse_target
from .ledger import CrashLedger
from .manifest import is_uri, read_bytes
from .schema import ROW_SCHEMA, error_line, ok_line, row_from_line, to_table

__all__ = ["LEDGER", "ExplainWorker", "WorkerSettings", "default_stem"]

#: The folder below the output folder that holds the job's own state (ledger, table parts).
LEDGER = ".onnxcam-ray"
_MAX_BYTES_PER_PIXEL = 8  # as onnxcam.images: 16-bit RGBA, uncompressed


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """What a worker needs besides the Explainer's config (plain, picklable data).

    Attributes:
        out_dir: the output folder; every worker must see the same folder.
        alpha: weight of the heat map in the overlays.
        emphasize: also write emphasized overlays around this threshold.
        thumbnails: write the report's thumbnails as the images go.
        max_crashes: times an image may kill its worker when run alone before it becomes an
            error row.
        group: images whose masked passes share batches (``explain_many``'s ``group``).
    """

    out_dir: str
    alpha: float = 0.5
    emphasize: float | None = None
    thumbnails: bool = True
    max_crashes: int = 2
    group: int = 4

    def __post_init__(self) -> None:
        if self.max_crashes < 1:
            raise ConfigError(f"max_crashes must be at least 1, got {self.max_crashes}")
        if self.group < 1:
            raise ConfigError(f"group must be at least 1, got {self.group}")


def default_stem(path: str) -> str:
    """Output name for a row without a ``stem``: the path's own folders and name (so it is
    recognisable), plus a hash of the whole path (so two rows never meet)."""
    if is_uri(path):
        parts = urlsplit(path)
        where = PurePosixPath(parts.netloc or "_", parts.path.lstrip("/"))
    else:
        where = PurePosixPath(Path(path).as_posix().lstrip("/"))
    tail = PurePosixPath(*[p for p in where.parent.parts if p not in ("..", ".")][-2:])
    digest = hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return (tail / f"{where.stem or 'image'}-{digest}").as_posix()


@dataclass(frozen=True)
class _Row:
    path: str
    location: str
    stem: str
    target: str | None
    label: str | None


def _rows(batch: pa.Table | Mapping[str, Sequence[Any]]) -> list[_Row]:
    columns = batch.to_pydict() if isinstance(batch, pa.Table) else dict(batch)
    if "path" not in columns:
        raise ConfigError(
            f"the dataset has no 'path' column (its columns: {', '.join(columns) or 'none'})"
        )
    paths = [str(p) for p in columns["path"]]
    n = len(paths)

    def column(name: str) -> list[Any]:
        values = columns.get(name)
        return [None] * n if values is None else [None if v is None else str(v) for v in values]

    return [
        _Row(path, location or path, stem or default_stem(path), target or None, label)
        for path, location, stem, target, label in zip(
            paths, column("location"), column("stem"), column("target"), column("label"),
            strict=True,
        )
    ]  # fmt: skip


class ExplainWorker:
    """Explains batches of manifest rows (see the module docstring).

    Args:
        config: the Explainer's configuration (as :attr:`Explainer.config`).
        settings: output folder and options.
        target: the target of every row without a ``target`` of its own (None: the top class;
            anything :meth:`Explainer.explain` takes, callables included).
        worker: how rows name this worker (default ``host:pid``).

    Calling it with a batch (a ``pyarrow.Table`` or a mapping of columns: ``path``, and
    optionally ``location``, ``stem``, ``target``, ``label``) returns a table of
    :data:`~onnxcam.dataset.schema.ROW_SCHEMA`, one row per input row, in order.
    """

    def __init__(
        self,
        config: ExplainerConfig,
        settings: WorkerSettings,
        *,
        target: TargetLike | Iterable[TargetLike] | None = None,
        worker: str | None = None,
    ) -> None:
        self.explainer = Explainer.from_config(config)
        self.settings = settings
        self.target = target
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.out = Confined(Path(settings.out_dir))
        self.ledger = CrashLedger(self.out.root / LEDGER)

    def __call__(self, batch: pa.Table | Mapping[str, Sequence[Any]]) -> pa.Table:
        rows = _rows(batch)
        paths = [row.path for row in rows]
        interrupted = self.ledger.running(paths)
        if interrupted:
            counts = {path: self.ledger.settle(path) for path in paths}
        else:
            counts = self.ledger.counts(paths)
        if interrupted or any(counts.values()):  # one at a time: a poison image dies alone
            out = []
            for row in rows:
                if counts[row.path] >= self.settings.max_crashes:
                    out.append(self._quarantined(row, counts[row.path]))
                    continue
                self.ledger.begin([row.path])
                out += self._explain([row], counts)
                self.ledger.end([row.path])
        else:
            self.ledger.begin(paths)
            out = self._explain(rows, counts)
        self.ledger.end(paths)
        return to_table(out, ROW_SCHEMA)

    # ----------------------------------------------------------------- one batch

    def _explain(self, rows: Sequence[_Row], counts: Mapping[str, int]) -> list[dict[str, Any]]:
        """Rows with the same target share one ``explain_many``; the order is kept."""
        done: dict[int, dict[str, Any]] = {}
        groups: dict[str | None, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(row.target, []).append(i)
        for spec, members in groups.items():
            t0 = time.perf_counter()
            lines = self._explain_group([rows[i] for i in members], spec)
            share = (time.perf_counter() - t0) / len(members)
            for i, line in zip(members, lines, strict=True):
                done[i] = row_from_line(
                    line, path=rows[i].path, label=rows[i].label, target=rows[i].target,
                    worker=self.worker, seconds=share, crashes=counts.get(rows[i].path, 0),
                )  # fmt: skip
        return [done[i] for i in range(len(rows))]

    def _explain_group(self, rows: Sequence[_Row], spec: str | None) -> list[dict[str, Any]]:
        """One line per row: read, explain (shared passes), write."""
        lines: list[dict[str, Any] | None] = [None] * len(rows)
        images: list[str | np.ndarray] = []
        todo: list[int] = []
        for i, row in enumerate(rows):
            try:
                images.append(self._image(row))
                todo.append(i)
            except ImageError as exc:
                lines[i] = _error(row, exc)
        failure: BaseException | None = None
        try:
            target = self.target if spec is None else parse_target(spec)
            outcomes = self.explainer.explain_many(images, target=target, group=self.settings.group)
            for i, (_, outcome) in zip(todo, outcomes, strict=False):
                lines[i] = self._finish(rows[i], outcome)
        except Exception as exc:  # a row boundary: the group's other rows fail with it, not the job
            failure = exc
        for i in todo:
            if lines[i] is None:
                why = failure or OnnxCamError("the explainer gave no result for this image")
                lines[i] = _error(rows[i], why)
        return [line for line in lines if line is not None]

    def _image(self, row: _Row) -> str | np.ndarray:
        """What the Explainer reads: a file's path, or the decoded pixels of an object."""
        if not is_uri(row.location):
            return row.location
        limit = self.explainer.config.max_pixels
        data = read_bytes(row.location, max_bytes=limit * _MAX_BYTES_PER_PIXEL + HEADER_BYTES)
        return decode_image(data, name=row.path, max_pixels=limit)

    def _finish(self, row: _Row, outcome: Result | OnnxCamError) -> dict[str, Any]:
        """Write one image's files (atomically, under its stem) and make its line."""
        if isinstance(outcome, OnnxCamError):
            return _error(row, outcome)
        result = replace(outcome, source=row.path)
        settings = self.settings
        try:
            result.save(
                self.out, stem=row.stem, alpha=settings.alpha, emphasize=settings.emphasize,
                thumbnails=settings.thumbnails,
            )  # fmt: skip
        except OnnxCamError as exc:
            return _error(row, exc)
        return ok_line(result.to_record(stem=row.stem, emphasized=settings.emphasize is not None))

    def _quarantined(self, row: _Row, crashes: int) -> dict[str, Any]:
        message = (
            f"{row.path}: killed its worker {crashes} time{'s' * (crashes != 1)} when run alone "
            "(a crash in native code, or out of memory); quarantined after --max-crashes "
            f"{self.settings.max_crashes}"
        )
        return row_from_line(
            error_line(row.path, "WorkerCrash", message),
            path=row.path, label=row.label, target=row.target, worker=self.worker,
            seconds=0.0, crashes=crashes,
        )  # fmt: skip


def _error(row: _Row, exc: BaseException) -> dict[str, Any]:
    """The error line of a row, naming the image as the input named it (not where the
    worker read it from), in one line."""
    text = str(exc)
    if row.location != row.path:
        text = text.replace(row.location, row.path)
    if not isinstance(exc, OnnxCamError):
        text = " ".join(text.split())[:500] or type(exc).__name__
    return error_line(row.path, type(exc).__name__, text)
