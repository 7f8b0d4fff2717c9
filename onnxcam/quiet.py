"""Keeping native libraries off the terminal.

libpng, libjpeg and ONNX Runtime's C++ core write warnings straight to file descriptor 2,
bypassing Python; onnxcam reports failures itself, as exceptions. ``native_stderr_silenced``
points fd 2 at the null device for the duration of a call into such a library. The swap is
process-wide, so it is serialised by a lock and kept as short as the call it wraps; Python's
own ``sys.stderr`` object is untouched (only writes that reach fd 2 while the lock is held are
lost).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

__all__ = ["native_stderr_silenced"]

_LOCK = threading.RLock()


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to fd 2 to the null device while the block runs."""
    with _LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no fd 2 (e.g. some embedded interpreters)
            yield
            return
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, 2)
            finally:
                os.close(null)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
