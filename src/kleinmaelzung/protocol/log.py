"""The traffic-log entry as it crosses the wire (`GET /api/log`, `log_result`), and how
refused input is kept.

One definition for the hub that serves the log and the clients that read it.
An entry's `message` is raw JSON, embedded as it was logged: a reader never
fails on an entry whose message it does not know, and decodes it further only
if it wants to (`LogEntry.decode_message`, `LogEntry.message_object`).

Input the hub refuses is logged under its own type, `refused`, with a message
that is a JSON object like any other (`RefusedInput`), however broken the
refused bytes were.
"""

from __future__ import annotations

import re

import msgspec

from .codec import Invalid, any_decoder
from .limits import Limits
from .messages import Error, ErrorInfo, LogDirection, LogEntry, Message

__all__ = [
    "REFUSED",
    "REFUSED_FRAME_BYTES",
    "LogDirection",
    "LogEntry",
    "LogPage",
    "RefusedInput",
    "decode_logged",
    "decode_refusal",
    "refused_entry_message",
]

#: The `type` of a log entry that records input the hub refused.
REFUSED = "refused"
#: How much of a refused frame the log keeps, in bytes of the frame.
REFUSED_FRAME_BYTES = 4096


class RefusedInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The message of a `refused` log entry: why, and what was refused."""

    #: The error the hub answered with.
    error: ErrorInfo
    #: The start of the refused frame as text (invalid UTF-8 replaced).
    frame: str
    #: The size of the whole refused frame; more than `frame` holds when cut.
    frame_bytes: int


class LogPage(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The body of a `GET /api/log` answer: entries newest first (or oldest, if asked)."""

    entries: list[LogEntry]
    #: Where the next page starts (``cursor=``), when there may be more; opaque.
    next_cursor: str | None = None


def decode_logged(message: bytes) -> Message | Invalid:
    """A logged message as a protocol message, or `Invalid` (`LogEntry.decode_message`)."""
    return _message_decoder.decode(message)


def decode_refusal(entry: LogEntry) -> RefusedInput | None:
    """For a `refused` entry, why and what was refused; None for any other (`LogEntry.refusal`)."""
    if entry.type != REFUSED:
        return None
    try:
        return _refused_decoder.decode(entry.message)
    except msgspec.DecodeError:
        return None


def refused_entry_message(error: Error, frame: bytes | str) -> bytes:
    """The JSON message to log for a refused frame: a `RefusedInput` object."""
    # surrogatepass: a lone surrogate cannot fail here; it becomes U+FFFD below.
    data = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
    size = len(data)
    # A refused hello may carry a real token (revoked, expired, another
    # agent's): the log never holds one, whatever shape the frame has.
    data = _TOKEN_FIELD.sub(rb'"token":"***"', _TOKEN.sub(rb"\1***", data))
    # Cut bytes, then decode: a character split at the cut becomes U+FFFD,
    # so the logged text is always valid, whatever the peer sent.
    text = data[:REFUSED_FRAME_BYTES].decode("utf-8", errors="replace")
    refused = RefusedInput(
        error=ErrorInfo(code=error.code, message=error.message), frame=text, frame_bytes=size
    )
    return _encoder.encode(refused)


_encoder = msgspec.json.Encoder()
#: A kmz token (`hub.auth.tokens`): its public id is kept, its secret is not.
_TOKEN = re.compile(rb"(kmz_[0-9a-f]{12}_)[A-Za-z0-9_-]+")
#: A hello's token field, whatever it holds.
_TOKEN_FIELD = re.compile(rb'"token"\s*:\s*"(?:[^"\\]|\\.)*"')
_refused_decoder = msgspec.json.Decoder(RefusedInput)
# The hub logs what it sends too, which may exceed what it accepts from peers.
_message_decoder = any_decoder(Limits(max_message_bytes=1 << 31))
