"""Output names for a whole dataset, decided once by the job before any worker starts.

A local run names each image's files as it goes (:meth:`onnxcam.outdir.OutputFolder.claim`);
workers on many machines cannot share that state, so the job fixes every name up front: the
same mirrored stems as a local run (:func:`onnxcam.outdir.natural_stems`, URIs mirrored like
paths), then a stem is bumped (``_2``, ``_3``, ...) when one of its files would replace a file
that is not this run's to write. That is decided from the *stems* those files could belong to,
so it does not depend on how many targets an image turns out to have.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..outdir import natural_stems, unique_stems
from .manifest import location_key

__all__ = ["RESERVED", "assign_stems", "blocked_stems"]

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


def assign_stems(locations: Sequence[str], *, blocked: Iterable[str] = ()) -> list[str]:
    """One stem per location: mirrored as a local run mirrors them; a blocked stem, or the
    stem ``x`` of an image when another image is called ``x_t0`` (several targets of ``x``
    would write ``x_t0.npy``), takes the next free ``x_2``, ``x_3``, ..."""
    natural = natural_stems([location_key(loc) for loc in locations])
    present = set(natural)
    avoid = set(blocked) | RESERVED
    for stem in natural:
        several = _TARGET.match(stem)
        if several and several.group(1) in present:
            avoid.add(several.group(1))
    return unique_stems(natural, avoid=avoid)
