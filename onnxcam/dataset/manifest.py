"""What a distributed run explains: a table with one row per image.

Columns: ``path`` (the input as given: what the results call it), ``location`` (where a worker
reads it: an absolute path or a URI), and the optional ``target`` (a target spec for that
image, e.g. its labelled class ``class:3``) and ``label`` (carried to the results, e.g. for an
audit of true against predicted classes).

A manifest is a ``.csv`` or ``.parquet`` file with a ``path`` column (relative paths are read
from the manifest's folder); a folder is listed recursively. Both may be local or any URI that
``pyarrow.fs`` understands (``s3://``, ``gs://``, ``hdfs://``, ``file://``).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Sequence
from pathlib import PurePath, PurePosixPath
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from ..errors import ConfigError, ImageError
from ..text import first_line

__all__ = [
    "COLUMNS",
    "MANIFEST_SUFFIXES",
    "from_paths",
    "is_manifest",
    "is_uri",
    "list_folder",
    "location_key",
    "read_bytes",
    "read_manifest",
]

COLUMNS = ("path", "location", "target", "label")
MANIFEST_SUFFIXES = (".csv", ".parquet")
_OPTIONAL = ("target", "label")


def is_uri(text: str) -> bool:
    """``scheme://...`` with a scheme of two letters or more (``C:\\`` is a path)."""
    scheme = urlsplit(text).scheme
    return len(scheme) > 1 and "://" in text


def is_manifest(text: str) -> bool:
    """A ``.csv`` or ``.parquet`` file, local or remote."""
    return PurePosixPath(urlsplit(text).path if is_uri(text) else text).suffix.lower() in (
        MANIFEST_SUFFIXES
    )


def location_key(location: str) -> PurePath:
    """An absolute path standing for ``location``, for mirroring output names: files as they
    resolve, URIs as ``/scheme:/host/key``."""
    if is_uri(location):
        parts = urlsplit(location)
        key = posixpath.normpath("/" + parts.path.lstrip("/")).lstrip("/")
        return PurePosixPath("/", f"{parts.scheme}:", parts.netloc or "_", key)
    return PurePath(os.path.realpath(location))


def _locate(path: str, base: str | None) -> str:
    if is_uri(path):
        return path
    if base is not None and not os.path.isabs(path):
        return posixpath.join(base, path) if is_uri(base) else os.path.join(base, path)
    return os.path.abspath(path)


def from_paths(
    paths: Sequence[str],
    *,
    targets: Sequence[str | None] | None = None,
    labels: Sequence[str | None] | None = None,
    base: str | None = None,
) -> pa.Table:
    """The manifest table of ``paths`` (relative ones are located below ``base``, else the
    current folder).

    Raises:
        ConfigError: an empty path, or a path listed twice.
    """
    seen: dict[str, tuple[int, str]] = {}
    locations = []
    for row, path in enumerate(paths, 1):
        if not path:
            raise ConfigError(f"row {row} has an empty path; every row needs an image path")
        location = _locate(path, base)
        key = str(location_key(location))  # x.png and ./x.png are one image
        if key in seen:
            first, named = seen[key]
            raise ConfigError(
                f"'{path}' is listed twice (rows {first} and {row}"
                f"{'' if named == path else f', as {named!r}'}); list each image once"
            )
        seen[key] = (row, path)
        locations.append(location)
    none = [None] * len(paths)
    return pa.table(
        {
            "path": pa.array(list(paths), pa.string()),
            "location": pa.array(locations, pa.string()),
            "target": pa.array(list(targets) if targets is not None else none, pa.string()),
            "label": pa.array(list(labels) if labels is not None else none, pa.string()),
        }
    )


def _filesystem(uri_or_path: str) -> tuple[pafs.FileSystem, str]:
    try:
        if is_uri(uri_or_path):
            return pafs.FileSystem.from_uri(uri_or_path)
        return pafs.LocalFileSystem(), os.path.abspath(uri_or_path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ConfigError(f"cannot open {uri_or_path}: {first_line(exc)}") from exc


def read_manifest(source: str) -> pa.Table:
    """Read a ``.csv`` or ``.parquet`` manifest (see the module docstring).

    Raises:
        ConfigError: unreadable, no ``path`` column, empty or duplicate paths.
    """
    fs, where = _filesystem(source)
    try:
        if is_manifest(source) and where.lower().endswith(".csv"):
            import pyarrow.csv as pacsv

            with fs.open_input_stream(where) as handle:
                table = pacsv.read_csv(
                    handle,
                    convert_options=pacsv.ConvertOptions(
                        column_types={c: pa.string() for c in ("path", *_OPTIONAL)}
                    ),
                )
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(where, filesystem=fs)
    except FileNotFoundError:
        raise ConfigError(f"manifest {source} not found") from None
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(
            f"cannot read manifest {source}: {first_line(exc)} (valid: a .csv with a header "
            "row or a .parquet file, with a 'path' column)"
        ) from exc
    twice = sorted({n for n in table.column_names if table.column_names.count(n) > 1})
    if twice:
        raise ConfigError(
            f"manifest {source} names the column '{twice[0]}' more than once; give each column "
            "once ('path', and optionally 'target' and 'label')"
        )
    if "path" not in table.column_names:
        shown = ", ".join(table.column_names[:8]) or "none"
        raise ConfigError(
            f"manifest {source} has no 'path' column (its columns: {shown}); valid: 'path', "
            "and optionally 'target' (a target spec per image) and 'label'"
        )
    columns = {}
    for name in ("path", *_OPTIONAL):
        if name in table.column_names:
            try:
                columns[name] = table.column(name).cast(pa.string()).to_pylist()
            except pa.ArrowException as exc:
                raise ConfigError(
                    f"manifest {source}: column '{name}' is not text ({first_line(exc)})"
                ) from exc
    paths = columns["path"]
    for row, path in enumerate(paths, 1):
        if path is None or not str(path).strip():
            raise ConfigError(f"manifest {source}: row {row} has an empty path")
    base = posixpath.dirname(source) if is_uri(source) else os.path.dirname(source) or "."
    return from_paths(
        [str(p) for p in paths],
        targets=[t or None for t in columns["target"]] if "target" in columns else None,
        labels=[v or None for v in columns["label"]] if "label" in columns else None,
        base=base,
    )


def list_folder(uri: str, suffixes: Iterable[str]) -> list[str]:
    """Every file below ``uri`` (recursively, sorted) whose name ends in one of ``suffixes``,
    as URIs.

    Raises:
        ConfigError: the folder cannot be listed.
    """
    fs, where = _filesystem(uri)
    wanted = {s.lower() for s in suffixes}
    try:
        infos = fs.get_file_info(pafs.FileSelector(where, recursive=True))
    except FileNotFoundError:
        raise ConfigError(f"folder {uri} not found") from None
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"cannot list {uri}: {first_line(exc)}") from exc
    root = where.rstrip("/")
    found = sorted(
        info.path
        for info in infos
        if info.type == pafs.FileType.File and PurePosixPath(info.path).suffix.lower() in wanted
    )
    # Rebuilt from the URI as given, so a host (hdfs://host:port) or bucket stays in the name.
    return [uri.rstrip("/") + "/" + p[len(root) :].lstrip("/") for p in found]


def read_bytes(uri: str, *, max_bytes: int) -> bytes:
    """An object's bytes, refused beyond ``max_bytes`` before they are read.

    Raises:
        ImageError: not found, a folder, too large, or unreadable.
    """
    try:
        fs, where = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(where)
        if info.type == pafs.FileType.NotFound:
            raise ImageError(f"image not found: {uri}")
        if info.type == pafs.FileType.Directory:
            raise ImageError(f"{uri}: is a folder, not an image file")
        if info.size is not None and info.size > max_bytes:
            raise ImageError(
                f"{uri}: object of {info.size:,} bytes is larger than any image within the pixel "
                "limit (raise it with --max-pixels)"
            )
        if isinstance(fs, pafs.LocalFileSystem):
            return _read_local(uri, where, max_bytes)
        with fs.open_input_stream(where) as handle:
            data = bytes(handle.read(max_bytes + 1))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ImageError(f"{uri}: cannot be read ({first_line(exc)})") from exc
    if len(data) > max_bytes:
        raise ImageError(f"{uri}: object is larger than {max_bytes:,} bytes (--max-pixels)")
    return data


def _read_local(uri: str, where: str, max_bytes: int) -> bytes:
    """A local file's bytes: a regular file only (a FIFO would block the worker for good, a
    device like ``/dev/zero`` reports size 0 and never ends), opened without blocking and
    checked on the open descriptor, read no further than ``max_bytes``."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(where, flags)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageError(f"{uri}: not a regular file (a FIFO, device or socket)")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageError(f"{uri}: file is larger than {max_bytes:,} bytes (--max-pixels)")
    return data
