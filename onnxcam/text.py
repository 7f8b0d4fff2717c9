"""Text that came from models, files or native libraries, made fit for one line of output."""

from __future__ import annotations

import unicodedata

__all__ = ["escape", "first_line"]

# Unicode's categories for what is not printable text: controls (Cc: newline, carriage return,
# tab, escape...), format characters (Cf: bidirectional overrides that reorder what is shown),
# surrogates, private use, unassigned; and the line and paragraph separators, which
# str.splitlines() and many log viewers take as line breaks.
_UNPRINTABLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def escape(text: object) -> str:
    """``text`` with every unprintable character written as ``\\xNN``, ``\\uNNNN`` or
    ``\\UNNNNNNNN``: newlines, carriage returns, tabs and escape sequences included, so that a
    name from a model or a file system can neither start a line of its own (and forge one in
    a terminal or a log) nor move the cursor or recolour the terminal. Printable text, other
    scripts included, is kept as it is; escaping twice changes nothing."""
    text = str(text)
    if text.isprintable():  # the common case, and cheap: nothing to escape
        return text
    out = []
    for char in text:
        if unicodedata.category(char) not in _UNPRINTABLE:
            out.append(char)
            continue
        code = ord(char)
        if code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def first_line(exc: BaseException, *, limit: int = 300) -> str:
    """The first non-blank line of ``exc``'s message, stripped and cut at ``limit``
    characters; the exception's type name when the message is empty. Native libraries (ONNX
    Runtime, OpenCV, Arrow, Ray) put their reason first and a backtrace or hints after it."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__
