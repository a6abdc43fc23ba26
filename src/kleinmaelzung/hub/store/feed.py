"""What the hub and its log's writer process say to each other, through two pipes.

Each message is a 4-byte little-endian length and a msgpack body. The hub
sends `Start`, then the items to log in the order it logged them, each with
its position in the stream (`Records`, `Save`, `Forget`), and `Stop` to close.
The writer answers `Ready` (or `Unavailable`), then `Done` after each batch
it committed, and `Failing` while writes fail in a way that may heal.

Positions number every item the hub logs since it started (from 0). The
writer commits the highest position of each batch with the batch, so a
writer restarted after a crash is told (`Ready.position`) how far its
predecessor got, and the hub sends again only what is beyond it.
"""

from __future__ import annotations

import struct

import msgspec

from .base import Record
from .batch import ForgetInstrument, SaveInstrument

#: The length before each message.
HEADER = struct.Struct("<I")


class Start(msgspec.Struct, tag="start", array_like=True):
    """Open this log and continue this writer's stream (sent first, never on the command line:
    a URL may hold a password)."""

    url: str
    writer: str
    #: `priority.IDLE` or `priority.LOW`: how the writer yields the CPU to the hub.
    priority: str = "low"


class Records(msgspec.Struct, tag="records", array_like=True):
    """Log records at positions `first`, `first + 1`, ..."""

    first: int
    records: list[Record]


class Save(msgspec.Struct, tag="save", array_like=True):
    """Remember an instrument (the change carries its position)."""

    change: SaveInstrument


class Forget(msgspec.Struct, tag="forget", array_like=True):
    """Forget an instrument (the change carries its position)."""

    change: ForgetInstrument


class Stop(msgspec.Struct, tag="stop", array_like=True):
    """Commit everything sent, then exit."""


class Ready(msgspec.Struct, tag="ready", array_like=True):
    """The log is open; this writer's stream is committed up to `position` (-1: nothing)."""

    position: int
    pid: int


class Unavailable(msgspec.Struct, tag="unavailable", array_like=True):
    """The log cannot be opened, and why; the writer exits."""

    reason: str


class Done(msgspec.Struct, tag="done", array_like=True):
    """Everything up to `position` is committed (or dropped as unwritable)."""

    position: int
    #: The highest committed seq per ack key and instrument (`Batch.acks`).
    acks: dict[str, dict[str, int]]
    committed_rows: int
    dropped_rows: int


class Failing(msgspec.Struct, tag="failing", array_like=True):
    """Writes fail since `since` (monotonic, which all processes share) and why; None: ok again."""

    since: float | None
    reason: str = ""


class Lower(msgspec.Struct, tag="lower", array_like=True):
    """Run at `priority` from now on, every thread (`priority.lower_threads`)."""

    priority: str


ToWriter = Start | Records | Save | Forget | Lower | Stop
FromWriter = Ready | Unavailable | Done | Failing

_encoder = msgspec.msgpack.Encoder()


def frame(message: ToWriter | FromWriter) -> bytes:
    """One message, with its length before it."""
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body
