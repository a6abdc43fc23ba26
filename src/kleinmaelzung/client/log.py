"""The traffic log as the hub's HTTP API returns it."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class LogEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One logged message; `message` is the message object as it crossed the wire."""

    id: int
    ts: float
    direction: Literal["in", "out"]
    peer: str
    instrument: str | None
    type: str
    message: dict[str, Any]
    #: For inbound data: the clients it was forwarded to.
    delivered_to: str | None = None


class LogPage(msgspec.Struct, frozen=True):
    """`GET /api/log`: entries, newest first."""

    entries: list[LogEntry]
