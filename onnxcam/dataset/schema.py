"""The result rows of a distributed run: one per input image, with an explicit pyarrow schema.

A row says what became of one input (``status``: ``ok``, ``error`` or ``lost``), why when it
failed, what was explained (target specs, classes, scores) and where the files are (relative to
the output folder, exactly as in ``results.jsonl``). ``lost`` marks an input that no worker
reported on (the job was stopped, or Ray gave up on its block); a rerun with ``--resume``
explains it.

The rows the workers return also carry ``record``, the ``results.jsonl`` line as JSON text, so
the job can append it to the same file a local run keeps; the Parquet table leaves it out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

__all__ = [
    "RESULT_SCHEMA",
    "ROW_SCHEMA",
    "STATUSES",
    "error_line",
    "lost_row",
    "ok_line",
    "row_from_line",
    "to_table",
]

STATUSES = ("ok", "error", "lost")


def _field(name: str, kind: pa.DataType, about: str, *, nullable: bool = True) -> pa.Field:
    return pa.field(name, kind, nullable=nullable, metadata={"description": about})


RESULT_SCHEMA = pa.schema(
    [
        _field("path", pa.string(), "the input as given (file path or URI)", nullable=False),
        _field("status", pa.string(), "ok, error or lost", nullable=False),
        _field("error_type", pa.string(), "the error's class, e.g. ImageError, WorkerCrash"),
        _field("error", pa.string(), "what went wrong, one line"),
        _field("label", pa.string(), "the manifest's label column (e.g. the true class)"),
        _field("target", pa.string(), "the target spec asked for (manifest row or --target)"),
        _field("targets", pa.list_(pa.string()), "each explained target's spec"),
        _field("classes", pa.list_(pa.int64()), "each target's class index (null: none)"),
        _field("class_labels", pa.list_(pa.string()), "each target's class name"),
        _field("scores", pa.list_(pa.float64()), "each target's clean score"),
        _field("maps", pa.list_(pa.string()), "each target's .npy map, relative to OUT"),
        _field("overlays", pa.list_(pa.string()), "each target's overlay PNG, relative to OUT"),
        _field("json", pa.string(), "the image's JSON record, relative to OUT"),
        _field("passes", pa.int64(), "masked passes run"),
        _field("seconds", pa.float64(), "worker time for the image: read, explain, write"),
        _field("worker", pa.string(), "host:pid of the worker that wrote the row"),
        _field("provider", pa.string(), "ONNX Runtime execution provider"),
        _field("crashes", pa.int64(), "times the image killed its worker when run alone"),
    ]
)

ROW_SCHEMA = RESULT_SCHEMA.append(
    _field("record", pa.string(), "the results.jsonl line (JSON), as a local run writes it")
)


def ok_line(record: Mapping[str, Any]) -> dict[str, Any]:
    """A ``results.jsonl`` line for an explained image, in the local engine's format."""
    return {"status": "ok", **record}


def error_line(source: str, error_type: str, message: str) -> dict[str, Any]:
    """A ``results.jsonl`` line for an image that failed, in the local engine's format."""
    return {"status": "error", "source": source, "error_type": error_type, "error": message}


def row_from_line(
    line: Mapping[str, Any],
    *,
    path: str,
    label: str | None = None,
    target: str | None = None,
    worker: str = "",
    seconds: float | None = None,
    crashes: int = 0,
    with_record: bool = True,
) -> dict[str, Any]:
    """The row of one ``results.jsonl`` line (``ok`` or ``error``); ``seconds`` defaults to
    the record's own total time."""
    targets = list(line.get("targets") or [])
    files = [t.get("files") or {} for t in targets]
    timings = line.get("timings") or {}
    row: dict[str, Any] = {
        "path": path,
        "status": str(line.get("status", "error")),
        "error_type": line.get("error_type"),
        "error": line.get("error"),
        "label": label,
        "target": target,
        "targets": [str(t.get("spec")) for t in targets],
        "classes": [t.get("class_index") for t in targets],
        "class_labels": [t.get("label") for t in targets],
        "scores": [float(t["score"]) if "score" in t else None for t in targets],
        "maps": [f.get("npy") for f in files],
        "overlays": [f.get("overlay") for f in files],
        "json": (line.get("files") or {}).get("json"),
        "passes": line.get("masked_passes"),
        "seconds": seconds if seconds is not None else timings.get("total_s"),
        "worker": worker,
        "provider": line.get("provider"),
        "crashes": crashes,
    }
    if with_record:
        row["record"] = json.dumps(line)
    return row


def lost_row(path: str, *, label: str | None = None, target: str | None = None) -> dict[str, Any]:
    """The row of an input no worker reported on."""
    return {
        "path": path,
        "status": "lost",
        "error_type": "Lost",
        "error": "no worker reported on this image (the job stopped first); rerun with --resume",
        "label": label,
        "target": target,
        "crashes": 0,
    }


def to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema = ROW_SCHEMA) -> pa.Table:
    """Rows as a table of exactly ``schema`` (missing fields are null)."""
    names: Sequence[str] = schema.names
    return pa.Table.from_pylist([{n: row.get(n) for n in names} for row in rows], schema=schema)
