"""Querying the hub's traffic log (``GET /api/log``): a page at a time, or every match streamed.

`LogFilter` holds the filters; `query_log` returns one page (`LogPage`, with
the `next_cursor` to pass back for the next one), `stream_log` every
matching entry, read as NDJSON as the hub sends it (memory: one line).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import msgspec

from ..protocol import ErrorCode, LogEntry, LogPage, ProtocolError, QueryLog
from ..transport import base_url
from .history import TimeLike, to_timestamp
from .http import get_decoded
from .stream import lines, streamed_get

_page_decoder = msgspec.json.Decoder(LogPage)
_entry_decoder = msgspec.json.Decoder(LogEntry)


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which log entries to get; every filter given must hold."""

    #: Hub time: ``since <= ts < until`` (UNIX seconds, datetime, ``-1h``, ISO 8601).
    since: TimeLike | None = None
    until: TimeLike | None = None
    #: An instrument id or a glob over ids (``kiln-*``).
    instrument: str | None = None
    #: A glob over peer names, matched against each sender or recipient.
    peer: str | None = None
    direction: Literal["in", "out"] | None = None
    #: A message type, ``command`` (commands and replies) or ``refused``.
    kind: str | None = None
    #: Text the message contains (case-insensitive).
    text: str | None = None
    oldest_first: bool = False

    def params(self) -> dict[str, str]:
        """The query parameters of `GET /api/log` for these filters."""
        now = time.time()
        params: dict[str, str] = {}
        if self.since is not None:
            params["since"] = repr(to_timestamp(self.since, now=now))
        if self.until is not None:
            params["until"] = repr(to_timestamp(self.until, now=now))
        for name in ("instrument", "peer", "direction", "kind", "text"):
            value = getattr(self, name)
            if value is not None:
                params[name] = value
        if self.oldest_first:
            params["order"] = "oldest"
        return params


def log_request(
    request_id: str, where: LogFilter | None, *, limit: int, cursor: str | None
) -> QueryLog:
    """The `log_query` message for these filters (protocol 4: `Client.log`)."""
    where = where or LogFilter()
    now = time.time()
    return QueryLog(
        id=request_id,
        since=None if where.since is None else to_timestamp(where.since, now=now),
        until=None if where.until is None else to_timestamp(where.until, now=now),
        instrument=where.instrument,
        peer=where.peer,
        direction=where.direction,
        kind=where.kind,
        text=where.text or None,
        order="oldest" if where.oldest_first else "newest",
        limit=limit,
        cursor=cursor or None,
    )


async def query_log(
    url: str,
    where: LogFilter | None = None,
    *,
    limit: int = 100,
    cursor: str | None = None,
    timeout_s: float = 10.0,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> LogPage:
    """One page of matching entries (at most `limit`, within 1 MiB); `cursor` continues a walk."""
    params = (where or LogFilter()).params() | {"limit": str(limit)}
    if cursor:
        params["cursor"] = cursor
    endpoint = base_url(url) + "/api/log"
    return await get_decoded(
        _page_decoder,
        endpoint,
        params=params,
        timeout_s=timeout_s,
        token=token,
        ca_file=ca_file,
        pin_sha256=pin_sha256,
    )


async def stream_log(
    url: str,
    where: LogFilter | None = None,
    *,
    limit: int | None = None,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> AsyncIterator[LogEntry]:
    """Every matching entry (or the first `limit`), as the hub streams them."""
    params = (where or LogFilter()).params() | {"format": "ndjson"}
    if limit is not None:
        params["limit"] = str(limit)
    endpoint = base_url(url) + "/api/log"
    async with streamed_get(
        endpoint, params, token=token, ca_file=ca_file, pin_sha256=pin_sha256
    ) as response:
        async for line in lines(response):
            if line.strip():
                try:
                    yield _entry_decoder.decode(line)
                except msgspec.DecodeError as exc:
                    raise ProtocolError(
                        ErrorCode.INVALID_MESSAGE, f"unexpected line from {endpoint}: {exc}"
                    ) from None
