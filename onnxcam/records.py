"""Reading ``results.jsonl`` back: streamed, bounded and validated, never trusted.

The lines may have been written by another run, another version, or someone with a grudge. A
line is read at most :data:`MAX_RECORD_BYTES` at a time (a longer one is skipped without being
held in memory), parsed, and checked: an object with ``status`` ``ok`` or ``error`` and a string
``source``; ``files`` (and each target's ``files``) a mapping of kinds to names that stay inside
the output folder (:func:`onnxcam.confined.is_confined`); ``targets`` a list of objects. What
does not validate is skipped and counted, so a caller can say how many.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from .confined import is_confined

__all__ = [
    "MAX_RECORD_BYTES",
    "RecordCounts",
    "files_of",
    "iter_records",
    "to_json",
    "valid_record",
]

#: The longest ``results.jsonl`` line read; a record holds a few kB.
MAX_RECORD_BYTES = 1 << 20
_CHUNK = 1 << 16
STATUSES = ("ok", "error")


@dataclass
class RecordCounts:
    """How many lines were read, and why others were skipped."""

    read: int = 0
    too_large: int = 0
    invalid: int = 0

    @property
    def skipped(self) -> int:
        return self.too_large + self.invalid

    def describe(self) -> str:
        """``""`` when nothing was skipped, else a short clause for a message."""
        parts = []
        if self.too_large:
            parts.append(f"{self.too_large} over {MAX_RECORD_BYTES // (1 << 20)} MB")
        if self.invalid:
            parts.append(f"{self.invalid} not valid records")
        return ", ".join(parts)


def _names_ok(files: Any) -> bool:
    return isinstance(files, dict) and all(
        isinstance(kind, str) and is_confined(name) for kind, name in files.items()
    )


def valid_record(value: Any, statuses: tuple[str, ...] = STATUSES) -> dict[str, Any] | None:
    """``value`` when it is a record this module accepts (see the module docstring), with a
    ``status`` among ``statuses``."""
    if not isinstance(value, dict):
        return None
    if value.get("status") not in statuses or not isinstance(value.get("source"), str):
        return None
    if "files" in value and not _names_ok(value["files"]):
        return None
    targets = value.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
        return None
    if not all(_names_ok(t.get("files", {})) for t in targets):
        return None
    return value


def files_of(record: Mapping[str, Any]) -> list[str]:
    """The names a valid record gives for its files (record's own, then its targets')."""
    names = list((record.get("files") or {}).values())
    for target in record.get("targets") or []:
        names += list((target.get("files") or {}).values())
    return [n for n in dict.fromkeys(names) if isinstance(n, str)]


def _lines(handle: BinaryIO, counts: RecordCounts) -> Iterator[bytes]:
    """Lines of at most :data:`MAX_RECORD_BYTES`; a longer one is drained and counted."""
    buffer = b""
    skipping = False
    while True:
        chunk = handle.read(_CHUNK)
        if not chunk:
            if buffer and not skipping:
                yield buffer
            return
        buffer += chunk
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                break
            line, buffer = buffer[:end], buffer[end + 1 :]
            if skipping:
                skipping = False
                continue
            if len(line) > MAX_RECORD_BYTES:
                counts.too_large += 1
                continue
            yield line
        if len(buffer) > MAX_RECORD_BYTES:
            if not skipping:
                counts.too_large += 1
            skipping = True
            buffer = b""


def iter_records(
    handle: BinaryIO,
    counts: RecordCounts | None = None,
    *,
    statuses: tuple[str, ...] = STATUSES,
) -> Iterator[dict[str, Any]]:
    """The valid records of a ``results.jsonl`` stream, in order. Lines cut short by a kill
    (no valid JSON) are passed over silently; lines that parse but do not validate, and
    lines too long, are counted in ``counts``."""
    counts = counts if counts is not None else RecordCounts()
    for line in _lines(handle, counts):
        if not line.strip():
            continue
        try:
            value = json.loads(line.decode("utf-8", errors="replace"))
        except ValueError:
            continue  # a line cut short by a killed run
        except RecursionError:  # valid JSON nested deeper than any record is
            counts.invalid += 1
            continue
        record = valid_record(value, statuses)
        if record is None:
            counts.invalid += 1
            continue
        counts.read += 1
        yield record


def to_json(value: Any, *, indent: int | None = None) -> str:
    """``value`` as strict JSON: NaN and infinities become ``null`` (``JSON.parse`` and most
    readers refuse them)."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
