"""onnxcam.text: untrusted text escaped into one line; exceptions shown by their first line."""

from __future__ import annotations

import pytest

from onnxcam.text import escape, first_line


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain name/conv_1", "plain name/conv_1"),
        ("a\nFAKE: b", "a\\x0aFAKE: b"),
        ("a\r\nb\tc", "a\\x0d\\x0ab\\x09c"),
        ("\x1b[31mred\x07", "\\x1b[31mred\\x07"),
        ("\x85next line", "\\x85next line"),
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),  # line and paragraph separators
        ("abc\u202etxt.exe", "abc\\u202etxt.exe"),  # a right-to-left override
        ("\U000e0001tag", "\\U000e0001tag"),
        ("Straße 東京 ✓ \u00a0", "Straße 東京 ✓ \u00a0"),  # printable text stays
    ],
)
def test_escape_leaves_one_printable_line(raw: str, shown: str) -> None:
    assert escape(raw) == shown
    assert len(escape(raw).splitlines()) == 1
    assert escape(escape(raw)) == escape(raw)


def test_first_line_skips_blank_lines_and_cuts_long_ones() -> None:
    assert first_line(RuntimeError("\n  \n  reason here  \nbacktrace\n")) == "reason here"
    assert first_line(ValueError("x" * 1000)) == "x" * 300
    assert first_line(ValueError("x" * 1000), limit=20) == "x" * 20


def test_first_line_of_an_empty_message_is_the_type() -> None:
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("  \n ")) == "OSError"
