"""Image files in, RGB arrays out: what a path is, what its header claims, and a guarded decode.

Every way a file can fail becomes an :class:`ImageError` that names the file and what was
wrong: not there, a folder, a FIFO or device (never opened, so a FIFO cannot hang the run), a
broken or looping symbolic link, empty, larger than any image within the pixel limit, a header
that claims more pixels than allowed or than the file could hold, a decoder that raises, or
pixels that do not decode. Native decoder warnings never reach the terminal.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError
from .quiet import native_stderr_silenced
from .text import first_line

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "HEADER_BYTES",
    "MIN_SIDE",
    "as_rgb",
    "decode_image",
    "image_size_from_header",
    "read_image",
]

DEFAULT_MAX_PIXELS = 100_000_000
MIN_SIDE = 8  # pixels a side an image needs for a saliency map
HEADER_BYTES = 1 << 20  # enough for a JPEG's SOF after large EXIF/ICC segments
# Bytes a file needs at least per pixel it claims: a JPEG codes every 8x8 block of the
# luminance in 2 bits or more (1/256 B/px), deflate stops near 1:1032 (PNG, one 8-bit channel).
# Both are divided by 4 to leave room for what the estimate misses.
_MIN_BYTES_PER_PIXEL = {"jpeg": 1 / 1024, "png": 1 / 4128}
_MAX_BYTES_PER_PIXEL = 8  # 16-bit RGBA, uncompressed


def _kind(path: Path) -> str:
    """Why ``path`` is not a regular file, or "" when it is one."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "image not found"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISLNK(info.st_mode):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return f"is a broken symbolic link (to {os.readlink(path)})"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "is a symbolic link loop"
            return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(info.st_mode):
        return ""
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not an image file"
    if stat.S_ISFIFO(info.st_mode):
        return "is a named pipe (FIFO), not an image file"
    if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
        return "is a device, not an image file"
    return "is not a regular file"


def _check_size(path: Path | str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f"{path}: image is {width}×{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} (raise it with --max-pixels / max_pixels=)"
        )


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG, JPEG, GIF, BMP, WebP or TIFF header without decoding."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return int(w), int(h)
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(int(w)), abs(int(h))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    kind = data[12:16]
    if kind == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    if kind == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first IFD."""
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        return None
    (offset,) = struct.unpack(order + "I", data[4:8])
    if offset + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    found: dict[int, int] = {}
    for k in range(count):
        entry = offset + 2 + 12 * k
        if entry + 12 > len(data):
            break
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (256, 257):
            fmt = order + ("H" if kind == 3 else "I")
            size = 2 if kind == 3 else 4
            (found[tag],) = struct.unpack(fmt, data[entry + 8 : entry + 8 + size])
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def _format(data: bytes) -> str | None:
    if data[:2] == b"\xff\xd8":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


def as_rgb(image: np.ndarray, *, source: str = "image") -> np.ndarray:
    """Validate an array image and return it as RGB uint8 (H, W, 3).

    Accepts (H, W) grayscale, (H, W, 1), (H, W, 3) RGB and (H, W, 4) RGBA, in uint8,
    uint16 (scaled by 1/257) or float (0..1 when its max is at most 1, else 0..255).
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(
            f"{source}: array of shape {arr.shape} is not an image; expected (H, W), "
            "(H, W, 3) RGB or (H, W, 4) RGBA"
        )
    if arr.shape[0] < MIN_SIDE or arr.shape[1] < MIN_SIDE:
        raise ImageError(
            f"{source}: image is {arr.shape[1]}×{arr.shape[0]} pixels; at least "
            f"{MIN_SIDE}×{MIN_SIDE} is needed for a saliency map"
        )
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError(f"{source}: float image contains NaN or Inf")
        scale = 255.0 if float(arr.max(initial=0.0)) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), EXIF orientation applied.

    Grayscale becomes three equal channels, alpha is dropped, 16-bit and float images are
    scaled to 8 bits (:func:`as_rgb`). The pixel count is checked from the
    header before the file is read whole, and the file's size against what the header claims.

    Raises:
        ImageError: see the module docstring.
    """
    path = Path(path)
    problem = _kind(path)
    if problem:
        where = f"{problem}: {path}" if problem == "image not found" else f"{path}: {problem}"
        raise ImageError(where)
    nbytes = path.stat().st_size
    if nbytes == 0:
        raise ImageError(f"{path}: image file is empty")
    if nbytes > max_pixels * _MAX_BYTES_PER_PIXEL + HEADER_BYTES:
        raise ImageError(
            f"{path}: file of {nbytes:,} bytes is larger than any image within the limit of "
            f"{max_pixels:,} pixels (raise it with --max-pixels / max_pixels=)"
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(HEADER_BYTES)
        size = image_size_from_header(head)
        if size is not None:
            _check_size(path, size[0], size[1], max_pixels)
            _check_plausible(path, head, size, nbytes)
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return decode_image(data, name=str(path), max_pixels=max_pixels)


def decode_image(data: bytes, *, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file's bytes (read from anywhere, e.g. object storage) as RGB uint8
    (H, W, 3) with the same checks and conversions as :func:`read_image`; ``name`` is what
    the errors call it.

    Raises:
        ImageError: empty, over the pixel limit, truncated, or not decodable.
    """
    path = name
    if not data:
        raise ImageError(f"{path}: image file is empty")
    size = image_size_from_header(data[:HEADER_BYTES])
    if size is not None:
        _check_size(path, size[0], size[1], max_pixels)
        _check_plausible(path, data[:HEADER_BYTES], size, len(data))
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-65536:]:
        raise ImageError(f"{path}: JPEG is truncated (no end-of-image marker)")
    try:
        with native_stderr_silenced():
            decoded = cv2.imdecode(
                np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
            )
    except cv2.error as exc:
        raise ImageError(f"{path}: the decoder failed ({first_line(exc)})") from exc
    del data
    if decoded is None:
        raise ImageError(
            f"{path}: not a readable image (or a truncated one); supported: PNG, JPEG, BMP, "
            "TIFF, WebP and the other formats OpenCV decodes"
        )
    _check_size(path, decoded.shape[1], decoded.shape[0], max_pixels)
    if decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3:
        rgb = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB, dst=decoded)  # in place: no second copy
    else:
        rgb = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return as_rgb(rgb, source=str(path))


def _check_plausible(path: Path | str, head: bytes, size: tuple[int, int], nbytes: int) -> None:
    """A compressed file far smaller than its claimed pixels could ever be is corrupt."""
    kind = _format(head)
    if kind is None:
        return
    least = int(size[0] * size[1] * _MIN_BYTES_PER_PIXEL[kind])
    if nbytes < least:
        raise ImageError(
            f"{path}: a {kind.upper()} of {size[0]}×{size[1]} pixels needs at least {least:,} "
            f"bytes, the file has {nbytes:,}: it is truncated or corrupt"
        )
