"""Pictures and files: jet overlays, grayscale maps, ``.npy`` and JSON records."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .errors import ConfigError, OutputError

if TYPE_CHECKING:
    from .explain import Result

__all__ = ["ensure_dir", "overlay", "saliency_image", "save_result"]


def saliency_image(saliency: np.ndarray) -> np.ndarray:
    """The map as an 8-bit grayscale image (0 = not salient, 255 = most salient)."""
    return np.clip(np.round(saliency * 255.0), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, saliency: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """The jet-coloured map blended over the RGB image; ``alpha`` is the map's weight."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha}")
    heat = cv2.applyColorMap(saliency_image(saliency), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    blended = image.astype(np.float32) * (1.0 - alpha) + heat.astype(np.float32) * alpha
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


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


def _write_atomic(path: Path, data: bytes) -> None:
    # Write to a temporary file first so an interrupted run never leaves half a file.
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _png(image: np.ndarray) -> bytes:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OutputError("PNG encoding failed")
    return buf.tobytes()


def _npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array.astype(np.float32))
    return buf.getvalue()


def save_result(result: Result, out_dir: Path, stem: str, *, alpha: float = 0.5) -> dict:
    """Write ``STEM.json``, ``STEM.npy``, ``STEM_overlay.png``, ``STEM_saliency.png``."""
    ensure_dir(out_dir)
    paths = {
        "overlay": out_dir / f"{stem}_overlay.png",
        "saliency": out_dir / f"{stem}_saliency.png",
        "npy": out_dir / f"{stem}.npy",
        "json": out_dir / f"{stem}.json",
    }
    if result.source is not None:
        source = Path(result.source).resolve()
        for path in paths.values():
            if path.resolve() == source:
                raise OutputError(f"refusing to overwrite the input image {result.source}")
    record = result.to_record()
    record["files"] = {k: p.name for k, p in paths.items()}
    _write_atomic(paths["overlay"], _png(overlay(result.image, result.saliency, alpha=alpha)))
    _write_atomic(paths["saliency"], _png(saliency_image(result.saliency)))
    _write_atomic(paths["npy"], _npy(result.saliency))
    _write_atomic(paths["json"], (json.dumps(record, indent=2) + "\n").encode())
    return paths
