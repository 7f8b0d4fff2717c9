"""The Parquet table of a distributed run: written as the rows come, reconciled at the end.

While the job runs, rows go to Parquet *parts* (``OUT/.onnxcam-ray/parts/``), each written
atomically every few seconds, so a killed job keeps what it finished. At the end, *reconcile*
makes ``OUT/results.parquet``: exactly one row per input of the manifest, in its order, the
latest row of each image (from the last table, older parts and this run's parts), ``lost``
for an input nothing reported on; then the parts are removed.

Resume is an anti-join on ``path``: an image is finished when its latest row is ``ok`` and all
its files are there (or, for a folder a local run made, when ``results.jsonl`` says so).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..render import ensure_dir, write_atomic
from .schema import RESULT_SCHEMA, lost_row, row_from_line, to_table

__all__ = [
    "TABLE",
    "TableWriter",
    "finished_paths",
    "latest_rows",
    "quarantined",
    "reconcile",
    "status_counts",
]

TABLE = "results.parquet"
PARTS = "parts"


def _write_parquet(path: Path, table: pa.Table) -> None:
    write_atomic(path, lambda handle: pq.write_table(table, handle, compression="zstd"))


class TableWriter:
    """Result rows to Parquet parts of ``state/parts``, flushed every ``every`` rows or
    ``seconds`` (whichever comes first) and at :meth:`close`.

    Args:
        state: the job's state folder (``OUT/.onnxcam-ray``).
        run_id: names this run's parts (sortable: later runs sort after earlier ones).
    """

    def __init__(
        self, state: Path, run_id: str, *, every: int = 2000, seconds: float = 10.0
    ) -> None:
        self.folder = ensure_dir(state / PARTS)
        self.run_id = run_id
        self.every = every
        self.seconds = seconds
        self._rows: list[Mapping[str, Any]] = []
        self._count = 0
        self._last = time.monotonic()

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self._rows.extend(rows)
        due = time.monotonic() - self._last >= self.seconds
        if len(self._rows) >= self.every or (self._rows and due):
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if not self._rows:
            return
        name = f"{self.run_id}-{self._count:06d}.parquet"
        _write_parquet(self.folder / name, to_table(self._rows, RESULT_SCHEMA))
        self._rows = []
        self._count += 1

    def close(self) -> None:
        self.flush()


def _parts(state: Path) -> list[Path]:
    folder = state / PARTS
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def _read(path: Path) -> pa.Table | None:
    try:
        table = pq.read_table(path)
        return table.select(RESULT_SCHEMA.names).cast(RESULT_SCHEMA)
    except (OSError, pa.ArrowException, KeyError):
        return None  # not ours, or unreadable: the images are done again


def latest_rows(out_dir: Path, state: Path) -> pa.Table:
    """The latest row of every image in the last table and the parts since (oldest first)."""
    tables = [t for t in map(_read, [out_dir / TABLE, *_parts(state)]) if t is not None]
    if not tables:
        return RESULT_SCHEMA.empty_table()
    every = pa.concat_tables(tables)
    order = pa.array(range(every.num_rows), pa.int64())
    every = every.append_column("_order", order)
    last = every.group_by("path").aggregate([("_order", "max")])
    keep = pc.is_in(every.column("_order"), value_set=last.column("_order_max"))
    return every.filter(keep).drop_columns(["_order"])


def finished_paths(latest: pa.Table, out_dir: Path) -> set[str]:
    """Paths whose latest row is ``ok`` and whose files (record, maps, overlays) are all
    there."""
    ok = latest.filter(pc.equal(latest.column("status"), "ok"))
    done = set()
    columns = ok.select(["path", "json", "maps", "overlays"]).to_pydict()
    for path, record, maps, overlays in zip(
        columns["path"], columns["json"], columns["maps"], columns["overlays"], strict=True
    ):
        files = [record, *(maps or []), *(overlays or [])]
        if all(f and os.path.isfile(out_dir / f) for f in files):
            done.add(path)
    return done


def reconcile(
    out_dir: Path,
    state: Path,
    manifest: pa.Table,
    *,
    finished: set[str],
    produced: set[str],
    local_records: Mapping[str, Mapping[str, Any]],
) -> pa.Table:
    """Write ``OUT/results.parquet`` with exactly one row per manifest input, in its order,
    and remove the parts.

    Args:
        finished: images skipped as finished when the run started.
        produced: images this run wrote a row for.
        local_records: ``results.jsonl`` records of finished images that may have no row
            (a folder a local run made), by path.

    An image keeps its latest row when this run made it, when it was finished, or when its
    last attempt failed; an image finished by a local run gets a row from its record; every
    other input is ``lost``.
    """
    latest = latest_rows(out_dir, state)
    position = {p: i for i, p in enumerate(latest.column("path").to_pylist())}
    statuses = latest.column("status").to_pylist()
    take: list[int] = []
    extra: list[dict[str, Any]] = []
    slots: list[tuple[int, int]] = []  # (0, index into take) or (1, index into extra)
    columns = manifest.select(["path", "target", "label"]).to_pydict()
    for path, target, label in zip(
        columns["path"], columns["target"], columns["label"], strict=True
    ):
        i = position.get(path)
        keep = i is not None and (path in produced or path in finished or statuses[i] == "error")
        if keep and i is not None:
            slots.append((0, len(take)))
            take.append(i)
        elif path in local_records:
            line = local_records[path]
            slots.append((1, len(extra)))
            extra.append(
                row_from_line(line, path=path, label=label, target=target, with_record=False)
            )
        else:
            slots.append((1, len(extra)))
            extra.append(lost_row(path, label=label, target=target))
    kept = latest.take(pa.array(take, pa.int64())) if take else RESULT_SCHEMA.empty_table()
    made = to_table(extra, RESULT_SCHEMA)
    both = pa.concat_tables([kept, made])
    order = [i if which == 0 else len(take) + i for which, i in slots]
    table = both.take(pa.array(order, pa.int64()))
    _write_parquet(out_dir / TABLE, table)
    for part in _parts(state):
        part.unlink(missing_ok=True)
    return table


def status_counts(table: pa.Table) -> dict[str, int]:
    """Rows by status (every status listed, zero or not)."""
    counts = {status: 0 for status in ("ok", "error", "lost")}
    for status in table.column("status").to_pylist():
        counts[status] = counts.get(status, 0) + 1
    return counts


def quarantined(table: pa.Table) -> list[str]:
    """Paths that killed their worker too often."""
    hit = table.filter(pc.equal(table.column("error_type"), "WorkerCrash"))
    return [str(p) for p in hit.column("path").to_pylist()]
