"""An output folder that a run owns: unique names, one writer at a time, resumable, append-only.

- **Names.** Each input gets a stem from its path relative to the inputs' common folder, so
  folders are mirrored (``a/x.png`` and ``b/x.png`` become ``a/x`` and ``b/x``); if two inputs
  still meet (``x.png`` and ``x.jpg``) the later one gets ``_2``, ``_3``, ... Before an image's
  files are written, none of them may be an input, a file that was in the folder before the run
  (other than this folder's own earlier results), or a file this run already wrote; otherwise
  the stem is bumped again.
- **One writer.** ``.onnxcam.lock`` is locked (``flock``) for the run; the kernel drops the lock
  when the process dies, so a crashed run never blocks the next.
- **Same settings, or say so.** ``run.json`` holds the fingerprint of what decides the files'
  contents: the model file's sha256, the node, method and its options, preprocessing, targets,
  render options and the onnxcam version (not threads, batch size or device, which change
  nothing but speed). A folder made with another fingerprint is refused unless ``overwrite``.
- **Resume.** ``results.jsonl`` gets one line per image as soon as its files are written
  (``{"status": "ok", ...record}`` or ``{"status": "error", ...}``), in one ``write`` and
  flushed; a rerun with the same fingerprint skips the images whose line is ``ok`` and whose
  files are all there, and appends the rest to the same file. Lines cut by a kill are ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from .errors import OutputError
from .render import ensure_dir
from .render.report import THUMBS, report_names

__all__ = [
    "LOCK_NAME",
    "MANIFEST",
    "RESULTS",
    "OutputFolder",
    "fingerprint",
    "is_output_folder",
    "natural_stems",
    "recorded_files",
    "relative_stems",
    "unique_stems",
]

MANIFEST = "run.json"
RESULTS = "results.jsonl"
LOCK_NAME = ".onnxcam.lock"


def fingerprint(settings: Mapping[str, Any]) -> str:
    """sha256 of the settings as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def relative_stems(inputs: Sequence[Path]) -> list[str]:
    """Stems that mirror the inputs' folders below their common folder; duplicates get
    ``_2``, ``_3``, ... (never equal to another input's stem)."""
    return unique_stems(natural_stems([p.resolve() for p in inputs]))


def natural_stems(locations: Sequence[PurePath]) -> list[str]:
    """Each absolute location's folders below the locations' common folder, and its stem
    (``image`` for a name that has none), taken as they are (no file system call, so that
    object-store keys mirror like files); two locations may share one."""
    if not locations:
        return []
    root = PurePath(os.path.commonpath([str(p.parent) for p in locations]))
    return [(p.parent.relative_to(root) / (p.stem or "image")).as_posix() for p in locations]


def unique_stems(natural: Sequence[str], *, avoid: Iterable[str] = ()) -> list[str]:
    """``natural`` with a stem taken twice, or one in ``avoid``, bumped to the next free
    ``_2``, ``_3``, ... (never another's natural stem)."""
    taken: set[str] = set()
    reserved = set(natural)
    blocked = set(avoid)
    stems = []
    for stem in natural:
        chosen, n = stem, 1
        while chosen in taken or chosen in blocked or (chosen != stem and chosen in reserved):
            n += 1
            chosen = f"{stem}_{n}"
        taken.add(chosen)
        stems.append(chosen)
    return stems


def _read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
        if isinstance(value, dict):
            lines.append(value)
    return lines


def is_output_folder(folder: Path) -> bool:
    """``folder`` holds an onnxcam run's ``run.json`` and ``results.jsonl``."""
    return (folder / MANIFEST).is_file() and (folder / RESULTS).is_file()


def recorded_files(folder: Path) -> set[Path]:
    """The files that earlier runs wrote into ``folder``: those its ``results.jsonl`` names,
    and the report's own (``contact_sheet.png``, everything under ``thumbs/``)."""
    written = {
        (folder / name).resolve()
        for record in _read_results(folder / RESULTS)
        for name in _files_of(record)
    }
    written |= {(folder / name).resolve() for name in report_names(folder)}
    if (folder / THUMBS).is_dir():
        written |= {p.resolve() for p in (folder / THUMBS).rglob("*") if p.is_file()}
    return written


def _files_of(record: Mapping[str, Any]) -> list[str]:
    names = list((record.get("files") or {}).values())
    for target in record.get("targets") or []:
        names += list((target.get("files") or {}).values())
    return [n for n in dict.fromkeys(names) if isinstance(n, str)]


class OutputFolder:
    """The output folder of one run (use as a context manager; see the module docstring).

    Args:
        path: the folder.
        settings: what decides the files' contents (see :func:`fingerprint`).
        inputs: the run's input files (never overwritten).
        overwrite: replace results made with other settings, and redo finished images.
    """

    def __init__(
        self,
        path: Path,
        *,
        settings: Mapping[str, Any],
        inputs: Iterable[Path],
        overwrite: bool = False,
    ) -> None:
        self.path = path
        self.settings = dict(settings)
        self.fingerprint = fingerprint(settings)
        self.inputs = [Path(p) for p in inputs]
        self.overwrite = overwrite
        self.finished: dict[str, dict[str, Any]] = {}
        self._protected: set[Path] = set()
        self._written: set[Path] = set()
        self._lock: int | None = None
        self._results: Any = None
        self._kept = False

    def __enter__(self) -> OutputFolder:
        ensure_dir(self.path)
        self._acquire()
        try:
            self._open()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._results is not None:
            self._results.close()
        if not self.finished and not self._kept:  # nothing worth resuming: leave no trace
            for name in (MANIFEST, RESULTS):
                (self.path / name).unlink(missing_ok=True)
        self._release()

    def _acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): runs are not guarded against each other
            return
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(
                f"another onnxcam run is writing to {self.path}; wait for it to finish or use "
                "another -o"
            ) from None
        self._lock = fd

    def _release(self) -> None:
        if self._lock is not None:
            (self.path / LOCK_NAME).unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None

    def _open(self) -> None:
        manifest = self.path / MANIFEST
        results = self.path / RESULTS
        previous = _read_results(results)
        before: dict[str, Any] = {}
        if manifest.is_file():
            try:
                before = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                before = {}
        made_before = manifest.is_file() or results.is_file()
        same = before.get("fingerprint") == self.fingerprint
        if made_before and not same and not self.overwrite:
            raise OutputError(
                f"{self.path} holds results made with other settings "
                f"({_difference(before.get('settings'), self.settings)}); use --overwrite to "
                "replace them, or a fresh -o"
            )
        for stale in self.path.rglob(".*.part"):  # left by a run killed mid-write
            stale.unlink(missing_ok=True)
        ours = {self.path / name for record in previous for name in _files_of(record)}
        if self.overwrite:
            for file in ours:
                if file.is_file() and file.resolve() not in {p.resolve() for p in self.inputs}:
                    file.unlink()
            results.unlink(missing_ok=True)
            previous = []
        else:
            for record in previous:
                names = _files_of(record)
                done = record.get("status") == "ok" and names
                if done and all((self.path / n).is_file() for n in names):
                    self.finished[str(record.get("source"))] = record
        self._protected = {p.resolve() for p in self.inputs}
        reported = recorded_files(self.path)  # the report's pictures are ours to redo too
        for file in self.path.rglob("*"):
            mine = file.name in (LOCK_NAME, MANIFEST, RESULTS) or file.resolve() in reported
            if file.is_file() and file not in ours and not mine:
                self._protected.add(file.resolve())
        for record in self.finished.values():
            self._written |= {(self.path / n).resolve() for n in _files_of(record)}
        text = json.dumps({"fingerprint": self.fingerprint, "settings": self.settings}, indent=2)
        tmp = manifest.with_name(f".{MANIFEST}.part")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, manifest)
        self._results = open(results, "a+", encoding="utf-8")  # noqa: SIM115 (held for the run)
        if self._results.tell():
            self._results.seek(self._results.tell() - 1)
            if self._results.read(1) != "\n":  # a line cut by a kill: end it, it stays ignored
                self._results.write("\n")

    @property
    def protected(self) -> frozenset[Path]:
        """The files no image may write to: the inputs and what was here before the run that
        is not this folder's own results (resolved paths)."""
        return frozenset(self._protected)

    def is_finished(self, source: Path) -> bool:
        """An earlier run with the same settings explained ``source`` completely."""
        return str(source) in self.finished

    def claim(self, stem: str, names: Callable[[str], Iterable[str]]) -> str:
        """A stem for which none of ``names(stem)`` (the files an image will write) would
        replace an input, a file that was here before the run (not this folder's own
        results), or a file this run wrote; ``stem`` itself when it is free, else ``stem_2``,
        ``stem_3``, ..."""
        n = 1
        chosen = stem
        while True:
            paths = {(self.path / name).resolve() for name in names(chosen)}
            if not paths & (self._protected | self._written):
                self._written |= paths
                return chosen
            n += 1
            chosen = f"{stem}_{n}"

    def record(self, line: Mapping[str, Any]) -> None:
        """Append one line to ``results.jsonl`` in a single write, flushed to disk."""
        self.record_many([line])

    def record_many(self, lines: Sequence[Mapping[str, Any]]) -> None:
        """Append several lines in a single write and one flush to disk (a distributed run
        gets rows a batch at a time)."""
        if not lines:
            return
        text = "".join(json.dumps(line) + "\n" for line in lines)
        self._kept = self._kept or any(line.get("status") == "ok" for line in lines)
        self._results.write(text)
        self._results.flush()
        os.fsync(self._results.fileno())


def _difference(before: Any, now: Mapping[str, Any]) -> str:
    if not isinstance(before, Mapping):
        return "made by an unknown run"
    now = json.loads(json.dumps(now, default=str))  # compare as stored
    changed = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    return "differing in " + ", ".join(changed[:4]) if changed else "differing"
