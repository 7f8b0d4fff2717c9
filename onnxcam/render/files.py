"""Result files: PNG overlays and maps, ``.npy`` arrays and JSON records, written atomically."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from ..errors import OutputError
from .overlay import Mark, emphasize, overlay, saliency_image

__all__ = ["ensure_dir", "write_atomic", "write_explanation"]


def ensure_dir(path: Path) -> Path:
    """Create the output folder, or say why it cannot be written."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"output path {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {path} is not writable")
    return path


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` (bytes, or a function that writes to a file) to ``path`` through a
    temporary file, so no reader sees half a file.

    The file gets the permissions the umask allows (``mkstemp`` alone would make it 0600), and
    the temporary file is removed whatever interrupts the write (an error, Ctrl-C).
    """
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # read it (the only way), then put it back
    os.umask(mask)
    return mask


def _png(image: np.ndarray) -> Callable[[BinaryIO], None]:
    """Writes an RGB (converted in place, so the caller's array is consumed) or gray image
    as PNG, straight from the encoder's buffer."""
    if image.ndim == 3:
        cv2.cvtColor(image, cv2.COLOR_RGB2BGR, dst=image)
    ok, buf = cv2.imencode(".png", image)
    del image
    if not ok:
        raise OutputError("PNG encoding failed")

    def write(handle: BinaryIO) -> None:
        handle.write(buf.data)

    return write


def _npy(array: np.ndarray) -> Callable[[BinaryIO], None]:
    """Writes the map as float32 ``.npy`` straight to the file (no copy in memory)."""
    values = np.asarray(array, np.float32)
    return lambda handle: np.save(handle, values)


def write_explanation(
    out_dir: Path,
    image: np.ndarray | None,
    maps: Sequence[np.ndarray],
    names: Sequence[Mapping[str, str]],
    record: Mapping[str, Any],
    json_name: str,
    *,
    alpha: float = 0.5,
    source: str | None = None,
    emphasis: float | None = None,
    marks: Sequence[Sequence[Mark]] | None = None,
) -> dict[str, Path]:
    """Write, for each map, its overlay over ``image`` (when there is one), its grayscale PNG
    and its ``.npy`` (file names from ``names[i]``: ``overlay``, ``saliency``, ``npy``; with
    ``emphasis``, also ``emphasized``: the overlay of the map through :func:`emphasize`
    around that threshold), then the record. ``marks[i]`` (boxes and captions) are drawn on
    map ``i``'s overlays.

    Returns:
        Every written path by ``"json"`` and ``"overlay"``/``"saliency"``/``"npy"``, the
        latter prefixed ``t{i}_`` when there are several maps.

    Raises:
        OutputError: a file cannot be written, or one would replace the input image.
    """
    ensure_dir(out_dir)
    prefix = len(maps) > 1
    paths = {"json": out_dir / json_name}
    for i, files in enumerate(names):
        for kind, name in files.items():
            paths[f"t{i}_{kind}" if prefix else kind] = out_dir / name
    if source is not None:
        original = Path(source).resolve()
        for path in paths.values():
            if path.resolve() == original:
                raise OutputError(f"refusing to overwrite the input image {source}")
    for path in paths.values():
        ensure_dir(path.parent)  # stems may mirror the inputs' folders
    boxes = marks if marks is not None else [()] * len(maps)
    for saliency, files, drawn in zip(maps, names, boxes, strict=True):
        if image is not None:
            picture = overlay(image, saliency, alpha=alpha, marks=drawn)
            write_atomic(out_dir / files["overlay"], _png(picture))
            if emphasis is not None and "emphasized" in files:
                steep = emphasize(saliency, emphasis)
                picture = overlay(image, steep, alpha=alpha, marks=drawn)
                write_atomic(out_dir / files["emphasized"], _png(picture))
        write_atomic(out_dir / files["saliency"], _png(saliency_image(saliency)))
        write_atomic(out_dir / files["npy"], _npy(saliency))
    write_atomic(paths["json"], (json.dumps(record, indent=2) + "\n").encode())
    return paths
