"""Output names for a whole dataset, decided once by the job before any worker starts.

A local run names each image's files as it goes (:meth:`onnxcam.outdir.OutputFolder.claim`);
workers on many machines cannot share that state, so the job fixes every name up front: the
same mirrored stems as a local run (:func:`onnxcam.outdir.natural_stems`, URIs mirrored like
paths), then a stem is bumped (``_2``, ``_3``, ...) when one of its files would replace a file
that is not this run's to write. That is decided from the *stems* those files could belong to,
so it does not depend on how many targets an image turns out to have.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..outdir import OutputFolder, natural_stems, unique_stems
from ..render import write_atomic
from .manifest import is_uri, location_key

__all__ = ["RESERVED", "assign_stems", "blocked_stems", "job_stems"]

#: Stems whose JSON record would replace the job's own files (run.json, summary.json).
RESERVED = frozenset({"run", "summary"})

_SUFFIXES = ("_overlay.png", "_emphasized.png", "_saliency.png", ".npy", ".json")
_THUMB = re.compile(r"^thumbs/(.+?)(_original)?\.jpg$")
_TARGET = re.compile(r"^(.+)_t\d+$")


def blocked_stems(files: Iterable[str]) -> set[str]:
    """Stems that would write one of ``files`` (paths relative to the output folder), for
    one target (``x_overlay.png`` blocks ``x``) or several (``x_t0.npy`` blocks ``x``)."""
    blocked: set[str] = set()
    for name in files:
        thumb = _THUMB.match(name)
        if thumb:
            blocked.add(thumb.group(1))
            continue
        for suffix in _SUFFIXES:
            if name.endswith(suffix):
                stem = name[: -len(suffix)]
                blocked.add(stem)
                several = _TARGET.match(stem)
                if several:
                    blocked.add(several.group(1))
    return blocked


def _mirrored(locations: Sequence[str]) -> list[str]:
    """Mirrored stems, local files below the local files' common folder and objects below
    the objects' common prefix, so one URI row does not move every local row's outputs."""
    groups: dict[bool, list[int]] = {}
    for i, location in enumerate(locations):
        groups.setdefault(is_uri(location), []).append(i)
    natural = [""] * len(locations)
    for members in groups.values():
        keys = [location_key(locations[i]) for i in members]
        for i, stem in zip(members, natural_stems(keys), strict=True):
            natural[i] = stem
    return natural


def assign_stems(locations: Sequence[str], *, blocked: Iterable[str] = ()) -> list[str]:
    """One stem per location: mirrored as a local run mirrors them; a blocked stem, or the
    stem ``x`` of an image when another image is called ``x_t0`` (several targets of ``x``
    would write ``x_t0.npy``), takes the next free ``x_2``, ``x_3``, ..."""
    natural = _mirrored(locations)
    present = set(natural)
    avoid = set(blocked) | RESERVED
    for stem in natural:
        several = _TARGET.match(stem)
        if several and several.group(1) in present:
            avoid.add(several.group(1))
    return unique_stems(natural, avoid=avoid)


def job_stems(
    manifest: pa.Table,
    folder: OutputFolder,
    latest: pa.Table,
    state: Path,
    finished: set[str],
) -> list[str]:
    """Every image's stem: mirrored like a local run, never onto a file that is not this
    run's to write: files that were here before (other than those an earlier run of this
    job wrote under the names it gave, ``state/names.parquet``, which are ours to redo) and
    finished images' files. The names are kept for the next run."""
    out_dir = folder.path.resolve()
    names = state / "names.parquet"
    ours: set[str] = set()
    with contextlib.suppress(OSError, pa.ArrowException):
        ours = set(pq.read_table(names, columns=["stem"]).column("stem").to_pylist())
    present = []
    for path in folder.protected:
        with contextlib.suppress(ValueError):
            present.append(path.relative_to(out_dir).as_posix())
    done_files: list[str] = []
    done = latest.filter(pc.is_in(latest.column("path"), pa.array(sorted(finished), pa.string())))
    for record, maps in zip(
        done.column("json").to_pylist(), done.column("maps").to_pylist(), strict=True
    ):
        done_files += [f for f in [record, *(maps or [])] if f]
    for files in folder.finished.values():
        done_files += files
    blocked = (blocked_stems(present) - ours) | blocked_stems(done_files)
    stems = assign_stems(manifest.column("location").to_pylist(), blocked=blocked)
    table = pa.table({"path": manifest.column("path"), "stem": pa.array(stems, pa.string())})
    write_atomic(names, lambda handle: pq.write_table(table, handle))
    return stems
