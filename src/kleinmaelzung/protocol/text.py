"""Free text from peers made safe for a log line or a terminal.

A client's `name`, an instrument's `kind` or `unit`, a status `reason`: any
peer may put a newline (a forged log line) or an ANSI escape (a terminal
that clears itself, retitles its window, or hides what follows) in them.
They are shown with such characters spelled out, never interpreted.
"""

from __future__ import annotations

# Control characters (C0, DEL, C1: U+009B is a one-byte CSI), line and
# paragraph separators, and the bidirectional overrides that reorder what a
# terminal shows (U+202A-U+202E, U+2066-U+2069).
_UNSAFE = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
_SPELLED = {code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _UNSAFE} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}

#: Longest free text shown as it came; the rest is cut with an ellipsis.
MAX_SHOWN_CHARS = 200


def printable(text: str, max_chars: int = MAX_SHOWN_CHARS) -> str:
    """`text` with control, separator and bidi characters spelled out, cut to `max_chars`."""
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    if text.isprintable():
        return text  # the common case, checked in C: none of the above is printable
    return text.translate(_SPELLED)
