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
  files are all there, and appends the rest to the same file. Lines cut by a kill are ignored;
  lines that do not validate (:mod:`onnxcam.records`) are skipped and counted. Before an
  image's files are written, its names are noted in ``.onnxcam-pending.jsonl``: files of an
  image killed before its results line are then known as this folder's own (redone under the
  same names, never taken as inputs). The note goes when every claim has its line.
- **Contained.** Every file is written, replaced and deleted through
  :class:`onnxcam.confined.Confined`: nothing outside the folder, nothing through a link.
  ``--overwrite`` deletes only files that the records name inside the folder, with an output's
  ending; the stale-file cleanup only onnxcam's own temporary files.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from .confined import Confined, confined_name, is_part_name
from .errors import OutputError
from .records import MAX_RECORD_BYTES, RecordCounts, files_of, iter_records, to_json
from .render.report import THUMBS, report_names

__all__ = [
    "LOCK_NAME",
    "RESULTS",
    "RUN_FILE",
    "OutputFolder",
    "fingerprint",
    "is_output_folder",
    "natural_stems",
    "recorded_files",
    "relative_stems",
    "unique_stems",
]

RUN_FILE = "run.json"
RESULTS = "results.jsonl"
LOCK_NAME = ".onnxcam.lock"
#: Each image's names, noted when claimed and before its files are written (see ``claim``).
PENDING = ".onnxcam-pending.jsonl"
CLAIMED = "claimed"
#: The naming rule's version, in every run's fingerprint: a rule that renames outputs must not
#: resume a folder named by the old one (it would make duplicates). 2: too long names are
#: shortened; a job's URI rows mirror below their own common prefix, not the local rows'.
NAMING = 2
NAME_MAX = 255  # bytes in one file name, on every common file system


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


def _records(out: Confined, counts: RecordCounts | None = None) -> Iterator[dict[str, Any]]:
    """The valid records of ``out``'s ``results.jsonl``, streamed (none when it is missing, a
    link or not a regular file)."""
    handle = out.open_read(RESULTS)
    if handle is None:
        return
    with handle:
        yield from iter_records(handle, counts)


def is_output_folder(folder: Path) -> bool:
    """``folder`` holds an onnxcam run's ``run.json`` and ``results.jsonl``."""
    return (folder / RUN_FILE).is_file() and (folder / RESULTS).is_file()


#: Endings of the files an image's record names (a cleanup or ``--overwrite`` deletes only
#: files that end so, whatever a record says).
OUTPUT_SUFFIXES = (".json", ".png", ".npy", ".jpg")


def recorded_files(folder: Path) -> set[Path]:
    """The files that earlier runs wrote, or were about to write, into ``folder``: those its
    ``results.jsonl`` and pending claims name, and the report's own (``contact_sheet.png``,
    everything under ``thumbs/``), as resolved paths inside ``folder``."""
    out = Confined.existing(folder)
    if out is None:
        return set()
    names = {name for record in _records(out) for name in files_of(record)}
    names |= _pending_names(out)
    names |= set(report_names(folder))
    written = {out.root / name for name in names if confined_name(name) is not None}
    written |= {out.root / name for name in out.files(THUMBS)}
    return written


def _pending_names(out: Confined) -> set[str]:
    """Names claimed by runs that may have been killed before their results line."""
    handle = out.open_read(PENDING)
    if handle is None:
        return set()
    names: set[str] = set()
    with handle:
        for record in iter_records(handle, statuses=(CLAIMED,)):
            names.update(files_of(record))
    return names


def _fits(stem: str, names: Callable[[str], Iterable[str]]) -> str:
    """``stem``, shortened (a hash of the whole keeps it unique) when one of its files' names
    would be longer than a file system allows."""
    longest = max((len(PurePosixPath(n).name.encode()) for n in names(stem)), default=0)
    if longest <= NAME_MAX:
        return stem
    head, _, last = stem.rpartition("/")
    digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    room = len(last.encode()) - (longest - NAME_MAX) - len(digest) - 1 - 8  # 8: "_NNN" bumps
    short = last.encode()[: max(room, 1)].decode("utf-8", errors="ignore")
    return f"{head}/{short}-{digest}" if head else f"{short}-{digest}"


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
        #: finished images' files, by source (the records are read again on demand:
        #: :meth:`finished_records`)
        self.finished: dict[str, tuple[str, ...]] = {}
        self.skipped = RecordCounts()
        self._protected: set[Path] = set()
        self._written: set[str] = set()  # names inside the folder (a million Paths weigh)
        self._lock: int | None = None
        self._results: Any = None
        self._pending: Any = None
        self._kept = False
        self._claimed: set[str] = set()
        self._recorded: set[str] = set()
        self.out = Confined(path)

    def __enter__(self) -> OutputFolder:
        if not os.access(self.out.root, os.W_OK | os.X_OK):
            raise OutputError(f"output folder {self.path} is not writable")
        self._acquire()
        try:
            self._open()
        except BaseException:
            self._close()
            self._release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()
        if not self.finished and not self._kept:  # nothing worth resuming: leave no trace
            for name in (RUN_FILE, RESULTS):
                self.out.unlink(name)
        if self._claimed <= self._recorded:  # every claim has its line: no orphans to know
            self.out.unlink(PENDING)
        self._release()

    def _close(self) -> None:
        for handle in (self._results, self._pending):
            if handle is not None:
                handle.close()
        self._results = self._pending = None

    def _acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): runs are not guarded against each other
            return
        while True:
            fd = self.out.open_lock(LOCK_NAME)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise OutputError(
                    f"another onnxcam run is writing to {self.path}; wait for it to finish or "
                    "use another -o"
                ) from None
            # the holder before us unlinks the file while it holds the lock: a lock on an
            # unlinked file guards nothing, so take the file that is there now
            now = self.out.lstat(LOCK_NAME)
            if now is not None and now.st_ino == os.fstat(fd).st_ino:
                self._lock = fd
                return
            os.close(fd)

    def _release(self) -> None:
        if self._lock is not None:
            self.out.unlink(LOCK_NAME)  # while still locked: see _acquire
            os.close(self._lock)
            self._lock = None

    def _open(self) -> None:
        out = self.out
        for name in (RESULTS, PENDING):
            info = out.lstat(name)
            if info is not None and not stat.S_ISREG(info.st_mode):
                raise OutputError(
                    f"{out.path(name)} is a symbolic link or not a regular file: onnxcam never "
                    "writes through links in its output folder; remove it, or use another -o"
                )
        before: Any = {}
        text = out.read(RUN_FILE, max_bytes=MAX_RECORD_BYTES)
        if text is not None:
            try:
                before = json.loads(text.decode("utf-8", errors="replace"))
            except ValueError:
                before = {}
        before = before if isinstance(before, dict) else {}
        made_before = out.lstat(RUN_FILE) is not None or out.lstat(RESULTS) is not None
        same = before.get("fingerprint") == self.fingerprint
        if made_before and not same and not self.overwrite:
            raise OutputError(
                f"{self.path} holds results made with other settings "
                f"({_difference(before.get('settings'), self.settings)}); use --overwrite to "
                "replace them, or a fresh -o"
            )
        # What is here decides everything below, and is known from one walk of the folder:
        # the records (maybe millions, maybe hostile) are streamed past it, not held.
        present: set[str] = set()  # a user's link too
        regular: set[str] = set()
        for entry, mode in out.entries():
            if stat.S_ISREG(mode) and is_part_name(entry.name):  # left by a run killed mid-write
                out.unlink(entry)
                continue
            present.add(entry.as_posix())
            if stat.S_ISREG(mode):
                regular.add(entry.as_posix())
        inputs = {p.resolve() for p in self.inputs}
        ours: set[str] = set()
        for record in _records(out, self.skipped):
            names = files_of(record)
            ours.update(n for n in names if n in present)
            complete = record["status"] == "ok" and names and all(n in regular for n in names)
            if complete and not self.overwrite:
                self.finished[record["source"]] = tuple(names)
            elif record["source"] in self.finished and record["status"] == "ok":
                del self.finished[record["source"]]  # redone since, and not complete
        ours |= _pending_names(out) & present
        if self.overwrite:
            for name in ours:
                if name.endswith(OUTPUT_SUFFIXES) and out.root / name not in inputs:
                    out.unlink(name)
            out.unlink(RESULTS)
            out.unlink(PENDING)
            present -= ours
        # the report's pictures are ours to redo too
        reported = set(report_names(self.path)) | {n for n in present if n.startswith(f"{THUMBS}/")}
        own = {LOCK_NAME, RUN_FILE, RESULTS, PENDING}
        self._protected = set(inputs) | {
            out.root / name for name in present - ours - own - reported
        }
        for files in self.finished.values():
            self._written.update(files)
        manifest = {"fingerprint": self.fingerprint, "settings": self.settings}
        out.write(RUN_FILE, (to_json(manifest, indent=2) + "\n").encode())
        self._results = out.open_append(RESULTS)
        size = os.fstat(self._results.fileno()).st_size
        if size and os.pread(self._results.fileno(), 1, size - 1) != b"\n":
            self._results.write(b"\n")  # a line cut by a kill: end it, it stays ignored
        self._pending = out.open_append(PENDING)

    @property
    def protected(self) -> frozenset[Path]:
        """The files no image may write to: the inputs and what was here before the run that
        is not this folder's own results (resolved paths)."""
        return frozenset(self._protected)

    def is_finished(self, source: Path | str) -> bool:
        """An earlier run with the same settings explained ``source`` completely."""
        return str(source) in self.finished

    def finished_records(self, sources: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The last complete ``ok`` record of each of ``sources`` that is finished (read again
        from ``results.jsonl``, so a large folder is not held in memory)."""
        wanted = {s for s in sources if s in self.finished}
        found: dict[str, dict[str, Any]] = {}
        if not wanted:
            return found
        for record in _records(self.out):
            source = record["source"]
            ok = source in wanted and record["status"] == "ok"
            if ok and tuple(files_of(record)) == self.finished[source]:
                found[source] = record
        return found

    def claim(
        self, stem: str, names: Callable[[str], Iterable[str]], *, source: str | None = None
    ) -> str:
        """A stem for which none of ``names(stem)`` (the files an image will write) would
        replace an input, a file that was here before the run (not this folder's own
        results), or a file this run wrote; ``stem`` itself when it is free, else ``stem_2``,
        ``stem_3``, ... (shortened first when its names would be too long). The claim is
        noted before any file is written, so a run killed before the image's results line
        knows its files as its own when it is run again."""
        base = _fits(stem, names)
        n = 1
        chosen = base
        while True:
            wanted = {self.out.name(name).as_posix() for name in names(chosen)}
            paths = {self.out.root / name for name in wanted}
            if not paths & self._protected and not wanted & self._written:
                self._written |= wanted
                break
            n += 1
            chosen = f"{base}_{n}"
        if self._pending is not None:
            files = {str(i): name for i, name in enumerate(names(chosen))}
            claimant = source or chosen
            line = {"status": CLAIMED, "source": claimant, "files": files}
            self._pending.write((json.dumps(line) + "\n").encode())  # no fsync: a kill keeps it
            self._claimed.add(claimant)
        return chosen

    def record(self, line: Mapping[str, Any]) -> None:
        """Append one line to ``results.jsonl`` in a single write, flushed to disk."""
        self.record_many([line])

    def record_many(self, lines: Sequence[Mapping[str, Any]]) -> None:
        """Append several lines in a single write and one flush to disk (a distributed run
        gets rows a batch at a time)."""
        if not lines:
            return
        text = "".join(to_json(line) + "\n" for line in lines)
        self._kept = self._kept or any(line.get("status") == "ok" for line in lines)
        try:
            self._results.write(text.encode("utf-8", "surrogatepass"))
            os.fsync(self._results.fileno())
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.out.path(RESULTS)}: {exc.strerror or exc}"
            ) from exc
        self._recorded.update(str(line.get("source")) for line in lines)


def _difference(before: Any, now: Mapping[str, Any]) -> str:
    if not isinstance(before, Mapping):
        return "made by an unknown run"
    now = json.loads(json.dumps(now, default=str))  # compare as stored
    changed = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    return "differing in " + ", ".join(changed[:4]) if changed else "differing"
