"""Reading image files: every way a file can be wrong is one ImageError naming it, nothing
hangs, nothing is read whole before its header is checked, and native decoders stay quiet."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from onnxcam import ImageError
from onnxcam.images import image_size_from_header, read_image


def tiff_header(width: int, height: int) -> bytes:
    """A little-endian TIFF with one IFD claiming ``width`` x ``height`` (8-bit RGB, no data)."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 2), (273, 4, 1, 8), (277, 3, 1, 3), (279, 4, 1, 64)]  # fmt: skip
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHII", tag, kind, count, value)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x00" * 256


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_tiff_sizes_come_from_the_header_before_any_decoding(tmp_path):
    data = tiff_header(50_000, 50_000)
    assert len(data) < 400 and image_size_from_header(data) == (50_000, 50_000)
    path = tmp_path / "bomb.tif"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=r"50000×50000 = 2,500,000,000 pixels, above the limit"):
        read_image(path)


def test_a_decoder_that_raises_is_this_images_error(tmp_path):
    path = tmp_path / "claims.tif"
    path.write_bytes(tiff_header(9_000, 9_000))  # within the pixel limit, no pixel data
    with pytest.raises(ImageError, match=r"claims\.tif"):
        read_image(path)


def test_a_file_too_small_for_the_pixels_it_claims_is_corrupt(tmp_path):
    ok, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    assert ok
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 9_000, 9_000)  # height, width
    path = tmp_path / "tiny.jpg"
    path.write_bytes(bytes(data))
    assert path.stat().st_size < 4_000
    with pytest.raises(ImageError, match=r"9000×9000 pixels needs at least 79,101 bytes"):
        read_image(path)


def test_a_huge_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.png"
    with path.open("wb") as handle:  # sparse: costs no disk and no memory
        handle.truncate(3 * 2**30)
    with pytest.raises(ImageError, match="larger than any image within the limit"):
        read_image(path, max_pixels=10_000_000)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifos_devices_and_broken_links_are_named_not_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    dangling = tmp_path / "gone.png"
    dangling.symlink_to(tmp_path / "nowhere.png")
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    cases = [
        (fifo, r"named pipe \(FIFO\)"),  # opening it would block forever
        (dangling, "broken symbolic link"),
        (loop, "symbolic link loop"),
        (Path("/dev/null"), "is a device"),
        (tmp_path, "is a folder"),
        (tmp_path / "missing.png", "image not found"),
    ]
    for path, phrase in cases:
        with pytest.raises(ImageError, match=phrase):
            read_image(path)


def test_native_decoder_warnings_do_not_reach_the_terminal(tmp_path):
    ok, buf = cv2.imencode(".png", np.full((16, 16, 3), 100, np.uint8))
    assert ok
    data = buf.tobytes()
    bogus = png_chunk(b"iCCP", b"bogus\x00\x00" + zlib.compress(b"\x00" * 200))
    path = tmp_path / "iccp.png"
    path.write_bytes(data[:33] + bogus + data[33:])  # libpng warns: "iCCP: too short"
    code = f"from onnxcam.images import read_image; print(read_image({str(path)!r}).shape)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert proc.stdout.strip() == "(16, 16, 3)" and proc.stderr == "", proc.stderr
