"""Raw serial transcripts: the ``transcript`` command and the bytes of `raw` messages.

A transcript is asked for by a client with the command ``transcript`` on an
instrument (``duration_s``, ``max_bytes_per_s``); the hub checks who asks and
forwards it to the instrument's agent, which then sends the bytes it writes
to and reads from that instrument's port as `RawTraffic` messages, for at
most `duration_s` and at most `max_bytes_per_s`; ``duration_s=0`` ends one
early. The hub logs each as a `raw` entry of the traffic log.

Bytes travel as escaped text (`escape_bytes`): readable in the log and in
`kmz log`, searchable with ``--text``, safe to print on any terminal, and
exactly reversible (`unescape_bytes`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .arguments import check_arguments
from .messages import CommandArg, CommandSpec

#: The command name the hub and agents answer themselves, for any instrument.
TRANSCRIPT = "transcript"
#: The log entry type (and `kind`) of a transcript's bytes.
RAW = "raw"
#: The protocol version that has transcripts and `raw` messages.
TRANSCRIPT_PROTOCOL = 4

DEFAULT_DURATION_S = 60.0
#: Ten minutes: long enough to catch an intermittent fault, short enough that
#: a forgotten transcript ends by itself.
MAX_DURATION_S = 600.0
#: A line instrument at 9600 baud moves at most 960 bytes a second each way:
#: the default keeps all of such a conversation.
DEFAULT_BYTES_PER_S = 2048
MIN_BYTES_PER_S = 64
#: 16 KiB/s for ten minutes is about 10 MB of log at most (escaping grows it
#: up to 4x for binary noise): a transcript cannot flood the log.
MAX_BYTES_PER_S = 16384
#: Each message counts at least this many bytes against the rate, so that
#: many tiny reads cannot turn into a flood of log rows.
MIN_CHARGE_BYTES = 32

TRANSCRIPT_SPEC = CommandSpec(
    name=TRANSCRIPT,
    description="Forward the raw bytes exchanged with this instrument's port for a while"
    " (0 s ends it)",
    args=[
        CommandArg(
            name="duration_s",
            type="float",
            description="seconds",
            minimum=0.0,
            maximum=MAX_DURATION_S,
        ),
        CommandArg(
            name="max_bytes_per_s",
            type="int",
            description="bytes per second, both directions together",
            minimum=MIN_BYTES_PER_S,
            maximum=MAX_BYTES_PER_S,
        ),
    ],
)

_PRINTABLE = {b: chr(b) for b in range(0x20, 0x7F) if b != 0x5C}
_NAMED = {0x5C: "\\\\", 0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t"}
_TABLE = [_PRINTABLE.get(b) or _NAMED.get(b) or f"\\x{b:02x}" for b in range(256)]
_ESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|([\\rnt]))")
_UNNAMED = {"\\": "\\", "r": "\r", "n": "\n", "t": "\t"}


def escape_bytes(data: bytes) -> str:
    """`data` as text: printable ASCII as itself, ``\\\\ \\r \\n \\t``, ``\\xNN`` for the rest."""
    return "".join([_TABLE[b] for b in data])


def unescape_bytes(text: str) -> bytes:
    """The bytes `escape_bytes` made `text` of."""

    def one(match: re.Match[str]) -> str:
        code, name = match.groups()
        return chr(int(code, 16)) if code else _UNNAMED[name]

    return _ESCAPE.sub(one, text).encode("latin-1")


def transcript_arguments(args: Mapping[str, Any]) -> tuple[float, int] | str:
    """`duration_s` and `max_bytes_per_s` (defaults filled in), or what is wrong with them."""
    filled = {"duration_s": DEFAULT_DURATION_S, "max_bytes_per_s": DEFAULT_BYTES_PER_S, **args}
    problem = check_arguments(TRANSCRIPT_SPEC, filled)
    if problem is not None:
        return problem
    return float(filled["duration_s"]), int(filled["max_bytes_per_s"])
