"""Result files: PNG overlays and maps, ``.npy`` arrays and JSON records, written atomically."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from ..confined import Confined
from ..errors import OutputError
from ..records import to_json
from .overlay import Mark, emphasize, overlay, saliency_image

__all__ = ["check_replaceable", "ensure_dir", "write_atomic", "write_explanation"]


def ensure_dir(path: Path) -> Path:
    """Create the output folder, or say why it cannot be written."""
    Confined(path)
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {path} is not writable")
    return path


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` (bytes, or a function that writes to a file) to the file ``path`` the
    user named, atomically (see :meth:`Confined.write`: the folder is ``path``'s own).

    Raises:
        OutputError: ``path`` is there and is not a regular file (or a link): a device such
            as ``/dev/zero``, a FIFO or a folder is never replaced.
    """
    check_replaceable(path)
    Confined(path.parent).write(path.name, data)


def check_replaceable(path: Path) -> None:
    """Refuse a file to write that is there and is not a regular file (or a link): a device
    such as ``/dev/zero``, a FIFO, a folder (call it before the work, so nothing is lost).

    Raises:
        OutputError: what is there, in one line.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written ({exc.strerror})") from None
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise OutputError(f"{path}: not a regular file; name a file to write")


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
    out: Confined | Path,
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
    out = out if isinstance(out, Confined) else Confined(Path(out))
    prefix = len(maps) > 1
    paths = {"json": out.path(json_name)}
    for i, files in enumerate(names):
        for kind, name in files.items():
            paths[f"t{i}_{kind}" if prefix else kind] = out.path(name)
    if source is not None:
        original = Path(source).resolve()
        for path in paths.values():
            if path == original:
                raise OutputError(f"refusing to overwrite the input image {source}")
    boxes = marks if marks is not None else [()] * len(maps)
    for saliency, files, drawn in zip(maps, names, boxes, strict=True):
        if image is not None:
            picture = overlay(image, saliency, alpha=alpha, marks=drawn)
            out.write(files["overlay"], _png(picture))
            if emphasis is not None and "emphasized" in files:
                steep = emphasize(saliency, emphasis)
                picture = overlay(image, steep, alpha=alpha, marks=drawn)
                out.write(files["emphasized"], _png(picture))
        out.write(files["saliency"], _png(saliency_image(saliency)))
        out.write(files["npy"], _npy(saliency))
    out.write(json_name, (to_json(record, indent=2) + "\n").encode())
    return paths
