"""The one rule for an output folder: nothing is created, replaced or deleted outside it, and
nothing is followed out of it.

Every writer and deleter of ``OUT`` goes through :class:`Confined`. A file is named by a
relative POSIX path (as records name them); a name that is absolute, empty, holds ``..`` or
``.`` parts, a NUL, a backslash or a drive is refused. The folders on the way are opened one at
a time, each relative to the one before and with ``O_NOFOLLOW``, so a symbolic link anywhere
below ``OUT`` (placed before the run or during it) is never followed: the call fails with an
:class:`~onnxcam.errors.OutputError` naming it. A file is written under a short temporary name
in its own folder and renamed over its final name; a rename replaces a link itself, never what
it points to. Reads for the report open regular files only (no FIFO, device or link), bounded
in size. ``OUT`` itself may be a link: the user named it, so it is resolved once, here.

Where the platform has no ``dir_fd`` calls (Windows), each folder on the way is checked with
``lstat`` instead: the same rule, without the guarantee against a link made mid-run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import OutputError

__all__ = ["PART_PREFIX", "Confined", "confined_name", "is_confined", "is_part_name"]

#: Temporary files are ``.onnxcam-<12 hex>.part``: short (a long final name never makes the
#: temporary one too long) and recognisable (a cleanup never takes a user's own ``.x.part``).
PART_PREFIX = ".onnxcam-"
_PART_SUFFIX = ".part"
_FOLLOWS = hasattr(os, "O_NOFOLLOW") and {os.open, os.mkdir, os.unlink} <= os.supports_dir_fd
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def is_confined(name: object) -> bool:
    """``name`` is a relative path that stays inside the folder it is read against (a string,
    not absolute, no ``//host``, drive, ``..``, ``.``, empty part, NUL or ``\\``)."""
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name:
        return False
    if name[0] == "/" or (len(name) > 1 and name[1] == ":"):
        return False
    return not any(part in ("", ".", "..") for part in name.split("/"))


def confined_name(name: object) -> PurePosixPath | None:
    """``name`` as a relative path when :func:`is_confined`, else None."""
    return PurePosixPath(name) if is_confined(name) else None  # type: ignore[arg-type]


def is_part_name(name: str) -> bool:
    """``name`` is one of onnxcam's own temporary files (left by a killed run)."""
    core = name[len(PART_PREFIX) : -len(_PART_SUFFIX)]
    return (
        name.startswith(PART_PREFIX)
        and name.endswith(_PART_SUFFIX)
        and len(core) == 12
        and all(c in "0123456789abcdef" for c in core)
    )


def _link_error(where: Path) -> OutputError:
    return OutputError(
        f"{where} is a symbolic link or not a folder: onnxcam never writes through links in "
        "its output folder; remove it, or use another -o"
    )


class Confined:
    """The output folder ``root`` (created if missing), and the only ways to write, delete
    and read back its files (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise OutputError(f"output path {root} exists and is not a folder")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {root}: {exc.strerror or exc}") from exc
        self.shown = root
        self.root = root.resolve()

    @classmethod
    def existing(cls, root: Path) -> Confined | None:
        """The folder ``root`` when it exists (nothing is created), else None."""
        if not Path(root).is_dir():
            return None
        return cls(root)

    # ------------------------------------------------------------------ names

    def name(self, name: str | PurePosixPath) -> PurePosixPath:
        """``name`` checked (see :func:`confined_name`).

        Raises:
            OutputError: a name that would leave the folder.
        """
        checked = confined_name(str(name) if isinstance(name, PurePosixPath) else name)
        if checked is None:
            raise OutputError(f"refusing {name!r}: not a relative name inside {self.shown}")
        return checked

    def relative(self, path: Path) -> PurePosixPath | None:
        """An absolute path's name inside the folder (lexically), or None."""
        try:
            inside = Path(os.path.abspath(path)).relative_to(self.root)
        except ValueError:
            return None
        return confined_name(inside.as_posix())

    def path(self, name: str | PurePosixPath) -> Path:
        """Where ``name`` is, for messages and for callers that only read metadata."""
        return self.root / self.name(name)

    # ------------------------------------------------------------------ folders

    @contextlib.contextmanager
    def _folder(self, parts: tuple[str, ...], *, create: bool) -> Iterator[int | None]:
        """A descriptor of the folder ``parts`` below the root, every step opened without
        following links (None on platforms without ``dir_fd``, after an ``lstat`` check)."""
        if not _FOLLOWS:
            here = self.root
            for part in parts:
                here = here / part
                if create and not here.exists() and not here.is_symlink():
                    here.mkdir()
                if here.is_symlink() or not here.is_dir():
                    raise _link_error(here)
            yield None
            return
        fd = os.open(self.root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        try:
            for i, part in enumerate(parts):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o777, dir_fd=fd)
                try:
                    nxt = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
                except OSError as exc:
                    if isinstance(exc, FileNotFoundError):
                        raise
                    raise _link_error(self.root.joinpath(*parts[: i + 1])) from None
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    def mkdir(self, name: str | PurePosixPath) -> Path:
        """Make the folder ``name`` (and those above it) inside the root."""
        checked = self.name(name)
        try:
            with self._folder(checked.parts, create=True):
                pass
        except FileNotFoundError as exc:
            raise OutputError(f"cannot create {self.root / checked}: {exc.strerror}") from exc
        except OSError as exc:
            raise OutputError(
                f"cannot create {self.root / checked}: {exc.strerror or exc}"
            ) from exc
        return self.root / checked

    # ------------------------------------------------------------------ writing

    def write(self, name: str | PurePosixPath, data: bytes | Callable[[BinaryIO], None]) -> Path:
        """Write ``data`` (bytes, or a function that writes to a file) to ``name`` atomically:
        no reader sees half a file, the permissions are those the umask allows, and the
        temporary file is removed whatever interrupts the write.

        Raises:
            OutputError: naming the file, when it cannot be written or would leave the folder.
        """
        checked = self.name(name)
        final = self.root / checked
        try:
            with self._folder(checked.parts[:-1], create=True) as fd:
                self._write_in(fd, final, checked.name, data)
        except OutputError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write {final}: {exc.strerror or exc}") from exc
        return final

    @staticmethod
    def _write_in(
        fd: int | None, final: Path, name: str, data: bytes | Callable[[BinaryIO], None]
    ) -> None:
        tmp = f"{PART_PREFIX}{secrets.token_hex(6)}{_PART_SUFFIX}"
        where = {"dir_fd": fd} if fd is not None else {}
        tmp_at = tmp if fd is not None else str(final.parent / tmp)
        name_at = name if fd is not None else str(final)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        handle_fd = os.open(tmp_at, flags, 0o666, **where)  # the umask applies
        done = False
        try:
            with os.fdopen(handle_fd, "wb") as handle:
                if callable(data):
                    data(handle)
                else:
                    handle.write(data)
            if fd is not None:
                os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            else:
                os.replace(tmp_at, name_at)
            done = True
        finally:
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_at, **where)

    def open_append(self, name: str | PurePosixPath) -> BinaryIO:
        """``name`` opened to append (created if missing), never through a link."""
        checked = self.name(name)
        final = self.root / checked
        try:
            with self._folder(checked.parts[:-1], create=True) as fd:
                flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC
                if fd is None:
                    if final.is_symlink():
                        raise _link_error(final)
                    handle_fd = os.open(final, flags, 0o666)
                else:
                    handle_fd = os.open(checked.name, flags, 0o666, dir_fd=fd)
        except OutputError:
            raise
        except OSError as exc:
            if exc.errno == getattr(os, "ELOOP", -1):
                raise _link_error(final) from None
            raise OutputError(f"cannot open {final}: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(os.fstat(handle_fd).st_mode):
            os.close(handle_fd)
            raise OutputError(f"{final} is not a regular file")
        return os.fdopen(handle_fd, "r+b", buffering=0)

    def open_lock(self, name: str) -> int:
        """A descriptor of the lock file ``name`` at the root (created, never a link)."""
        final = self.root / self.name(name)
        try:
            return os.open(final, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o666)
        except OSError as exc:
            if exc.errno == getattr(os, "ELOOP", -1):
                raise _link_error(final) from None
            raise OutputError(f"cannot open {final}: {exc.strerror or exc}") from exc

    # ------------------------------------------------------------------ deleting

    def unlink(self, name: str | PurePosixPath) -> bool:
        """Delete the file (or link: never what it points to) ``name`` inside the folder;
        False when it is not there or is a folder. A name that would leave the folder, or a
        link on the way, deletes nothing."""
        checked = confined_name(str(name))
        if checked is None:
            return False
        try:
            with self._folder(checked.parts[:-1], create=False) as fd:
                if fd is None:
                    target = self.root / checked
                    if target.is_dir() and not target.is_symlink():
                        return False
                    target.unlink()
                else:
                    info = os.stat(checked.name, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode):
                        return False
                    os.unlink(checked.name, dir_fd=fd)
        except (OutputError, OSError):
            return False
        return True

    # ------------------------------------------------------------------ reading

    def lstat(self, name: str | PurePosixPath) -> os.stat_result | None:
        """``name``'s own status (a link is not followed), or None when it is not there, its
        name leaves the folder, or a link lies on the way."""
        checked = confined_name(str(name))
        if checked is None:
            return None
        try:
            with self._folder(checked.parts[:-1], create=False) as fd:
                if fd is None:
                    return (self.root / checked).lstat()
                return os.stat(checked.name, dir_fd=fd, follow_symlinks=False)
        except (OutputError, OSError):
            return None

    def is_file(self, name: str | PurePosixPath) -> bool:
        """``name`` is a regular file inside the folder, reached without a link."""
        info = self.lstat(name)
        return info is not None and stat.S_ISREG(info.st_mode)

    def read(self, name: str | PurePosixPath, *, max_bytes: int) -> bytes | None:
        """The bytes of the regular file ``name`` (no link, FIFO or device; at most
        ``max_bytes``), or None."""
        handle = self.open_read(name)
        if handle is None:
            return None
        with handle:
            data = handle.read(max_bytes + 1)
        return data if len(data) <= max_bytes else None

    def open_read(self, name: str | PurePosixPath) -> BinaryIO | None:
        """The regular file ``name`` opened for reading (no link, FIFO or device), or None."""
        checked = confined_name(str(name))
        if checked is None:
            return None
        flags = os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC
        try:
            with self._folder(checked.parts[:-1], create=False) as fd:
                if fd is None:
                    if (self.root / checked).is_symlink():
                        return None
                    handle_fd = os.open(self.root / checked, flags)
                else:
                    handle_fd = os.open(checked.name, flags, dir_fd=fd)
        except (OutputError, OSError):
            return None
        if not stat.S_ISREG(os.fstat(handle_fd).st_mode):
            os.close(handle_fd)
            return None
        return os.fdopen(handle_fd, "rb")

    def files(self, under: str = "", *, links: bool = False) -> Iterator[PurePosixPath]:
        """Names of the regular files below ``under`` (the whole folder by default), and
        with ``links`` the links too, without entering linked folders."""
        for name, mode in self.entries(under):
            if links or stat.S_ISREG(mode):
                yield name

    def entries(self, under: str = "") -> Iterator[tuple[PurePosixPath, int]]:
        """The regular files and links below ``under``, each with its own mode (a link's is
        ``S_IFLNK``), in one walk that does not enter linked folders."""
        start = self.root / self.name(under) if under else self.root
        if start.is_symlink():
            return
        for folder, dirs, names in os.walk(start, followlinks=False):
            here = Path(folder)
            dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
            for name in names:
                path = here / name
                with contextlib.suppress(OSError):
                    mode = path.lstat().st_mode
                    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                        inside = self.relative(path)
                        if inside is not None:
                            yield inside, mode
