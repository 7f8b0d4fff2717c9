"""Small text files that a user names (labels, targets, boxes), read within a byte limit.

Only regular files are opened: a FIFO would block the open, a device such as ``/dev/zero``
never ends (its size reads 0), and a huge file would be read whole.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import ConfigError

__all__ = ["read_small_text"]


def read_small_text(path: str | Path, *, what: str, limit: int) -> str:
    """The UTF-8 text of the regular file ``path``, at most ``limit`` bytes; ``what`` names
    it in errors (``labels file``).

    Raises:
        ConfigError: missing, not a regular file, larger than ``limit``, or not UTF-8.
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"cannot read {what} {path}: not a regular file")
        if info.st_size > limit:
            raise ConfigError(f"{what} {path} has {info.st_size:,} bytes, more than {limit:,}")
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)  # it may have grown since
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"cannot read {what} {path}: {reason}") from None
    if len(data) > limit:
        raise ConfigError(f"{what} {path} has more than {limit:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read {what} {path}: not UTF-8 text ({exc.reason})") from None
