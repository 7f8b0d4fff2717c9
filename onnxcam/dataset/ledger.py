"""Which images killed their worker: a small ledger in the output folder, shared by every worker.

A worker that segfaults or is killed for memory takes its whole batch with it, and Ray runs the
batch again on a fresh worker: an image that kills every worker would be retried forever. The
ledger makes each retry count:

1. Before a batch runs, its *in-flight marker* (``inflight/<key>``, the key a hash of the batch's
   paths) is written; after its rows are written, the marker is removed.
2. A batch that arrives while its marker is still there was running when its worker died. It
   runs again one image at a time, each image with a marker of its own.
3. An image whose own marker is still there when it comes round again killed its worker while
   it ran alone: its crash count (``crashes/<key>``) goes up by one. An image whose count has
   reached ``max_crashes`` is not run again: it becomes an error row (quarantined).

So a batch with a poison image costs one retry for the batch and ``max_crashes`` for the image,
and its neighbours are explained. Only one worker runs a given batch at a time (Ray retries a
batch after its worker is gone), so the files need no locking; every write is atomic. The job
clears the markers when it starts (a stopped job is no crash) and keeps the crash counts, so a
resumed run does not run a poison image again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..render import ensure_dir, write_atomic

__all__ = ["CrashLedger"]


def _key(paths: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(paths).encode("utf-8", "surrogatepass")).hexdigest()[:40]


class CrashLedger:
    """The crash ledger kept in ``folder`` (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._inflight = folder / "inflight"
        self._crashes = folder / "crashes"

    def running(self, paths: Sequence[str]) -> bool:
        """These paths, as one batch, were in flight when their worker died (or are now)."""
        return (self._inflight / _key(paths)).is_file()

    def begin(self, paths: Sequence[str]) -> None:
        """Mark the batch (or single image) in flight."""
        ensure_dir(self._inflight)
        write_atomic(self._inflight / _key(paths), json.dumps(list(paths)).encode())

    def end(self, paths: Sequence[str]) -> None:
        """The batch's rows are written: no longer in flight."""
        (self._inflight / _key(paths)).unlink(missing_ok=True)

    def settle(self, path: str) -> int:
        """The image's crash count, first adding one if it was running alone when its worker
        died (its own marker is still there)."""
        count = self.counts([path])[path]
        if self.running([path]):
            count += 1
            ensure_dir(self._crashes)
            record = {"path": path, "crashes": count}
            write_atomic(self._crashes / _key([path]), json.dumps(record).encode())
            self.end([path])
        return count

    def counts(self, paths: Iterable[str]) -> dict[str, int]:
        """Crash counts of ``paths`` (one listing of the ledger, a read per crashed image)."""
        try:
            known = {p.name for p in self._crashes.iterdir()}
        except OSError:
            known = set()
        counts = {}
        for path in paths:
            key = _key([path])
            counts[path] = 0
            if key in known:
                try:
                    counts[path] = int(json.loads((self._crashes / key).read_text())["crashes"])
                except (OSError, ValueError, KeyError, TypeError):
                    counts[path] = 0
        return counts

    def total(self) -> dict[str, int]:
        """Every image with a crash count, by path."""
        found = {}
        try:
            files = list(self._crashes.iterdir())
        except OSError:
            return {}
        for file in files:
            try:
                record = json.loads(file.read_text())
                found[str(record["path"])] = int(record["crashes"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

    def clear_inflight(self) -> None:
        """Forget batches left in flight by a stopped job (keeps the crash counts)."""
        shutil.rmtree(self._inflight, ignore_errors=True)

    def clear(self) -> None:
        """Forget everything (``--overwrite``)."""
        shutil.rmtree(self.folder, ignore_errors=True)
