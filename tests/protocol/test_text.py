"""Free text from peers is shown with control, separator and bidi characters spelled out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kleinmaelzung.protocol import printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("kmz-watch", "kmz-watch"),
        ("°C and µS/cm", "°C and µS/cm"),
        ("a\nb", "a\\nb"),
        ("\x1b[2J\x1b]0;owned\x07", "\\x1b[2J\\x1b]0;owned\\x07"),
        ("\x9b31m", "\\x9b31m"),  # a one-byte CSI
        ("safe\u202eexe.txt", "safe\\u202eexe.txt"),
        ("line\u2028break", "line\\u2028break"),
    ],
)
def test_unsafe_characters_are_spelled_out(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_long_text_is_cut() -> None:
    assert printable("x" * 500, 10) == "x" * 9 + "…"


@given(st.text())
def test_nothing_unsafe_survives(text: str) -> None:
    shown = printable(text, 10_000)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in shown)
    assert not any(c in shown for c in "\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2069")
