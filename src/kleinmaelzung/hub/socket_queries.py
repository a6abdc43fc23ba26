"""Log and history queries over the client WebSocket (`log_query`, `history_query`, protocol 4).

The same filters, limits and answers as ``GET /api/log`` and ``GET
/api/history/ID``; who may ask is checked before these run (`auth.guard`,
with the rules of `auth.web` for the HTTP routes) and again here. The
database is read as the HTTP routes read it: SQLite in a worker thread,
PostgreSQL through asyncpg's pool, so the event loop keeps forwarding live
data meanwhile; the asking client's next message waits for the answer.

A log answer longer than one frame may be (1 MiB) comes as several
`log_result`s, the last with ``done: true``. The hub logs each result it
sends without its entries, and a history result without its buckets: they
are copies of what the log holds, and logging them would grow the log by
every query's size.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import msgspec

from ..protocol import (
    Error,
    ErrorCode,
    History,
    HistoryResult,
    LogEntry,
    LogResult,
    QueryHistory,
    QueryLog,
    State,
    encode,
    is_name,
)
from .auth.web import log_types
from .history import DEFAULT_POINTS, DEFAULT_RANGE_S, MAX_BUCKETS, load_history
from .log_api import ENTRY_OVERHEAD, FIRST_READ, STREAM_PAGE
from .store import StoreError
from .store.queries import LogQuery

if TYPE_CHECKING:
    from .handlers import Context
    from .services import Hub

_log = logging.getLogger(__name__)

#: A `log_result`'s fields besides its entries, encoded, at most (bytes).
RESULT_OVERHEAD = 256


class _Refusal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def log_query(ctx: Context, message: QueryLog) -> None:
    """Answer a `log_query` with `log_result`s, or an `error` with its id."""
    # Logged with no instrument, as a subscribe is: an instrument's log is its traffic,
    # and queries named by it would show up in the pages of the very walk that asks.
    ctx.log_in(message)
    hub = ctx.hub
    try:
        if not may_read_log(ctx, message.instrument):
            raise _Refusal(ErrorCode.FORBIDDEN, "the whole log needs admin; name an instrument")
        query = _log_query(hub, message)
        await _answer_log(ctx, message.id, query, message.limit)
    except _Refusal as refusal:
        ctx.send(Error(code=refusal.code, message=str(refusal), id=message.id))
    except StoreError as exc:
        _log.warning("log query failed", extra={"peer": ctx.peer.name, "error": str(exc)})
        ctx.send(Error(code=ErrorCode.INTERNAL_ERROR, message=str(exc), id=message.id))


def may_read_log(ctx: Context, instrument: str | None) -> bool:
    """Whether the peer may read the log of `instrument` (None: the whole log), as on HTTP."""
    principal = ctx.hub.auth.principal(ctx.peer)
    if principal is None:
        return False
    return principal.is_admin or (instrument is not None and principal.may_subscribe(instrument))


def _log_query(hub: Hub, message: QueryLog) -> LogQuery:
    """The store's query for a `log_query`, with the HTTP route's checks."""
    types: tuple[str, ...] = ()
    if message.kind is not None:
        found = log_types(message.kind)
        if found is None:
            raise _Refusal(
                ErrorCode.INVALID_ARGUMENTS, f"not a kind of log entry: {message.kind!r}"
            )
        types = found
    if message.peer is not None and not message.peer.isprintable():
        raise _Refusal(ErrorCode.INVALID_ARGUMENTS, "peer must be printable characters")
    maximum = hub.config.limits.max_log_entries
    if message.limit > maximum:
        raise _Refusal(
            ErrorCode.INVALID_ARGUMENTS, f"limit must be 1..{maximum}, got {message.limit}"
        )
    cursor = None
    if message.cursor is not None:
        if not message.cursor.isdigit():
            raise _Refusal(
                ErrorCode.INVALID_ARGUMENTS, f"not a cursor of this log: {message.cursor!r}"
            )
        cursor = int(message.cursor)
    return LogQuery(
        since=message.since,
        until=message.until,
        instrument=message.instrument,
        peer=message.peer,
        direction=message.direction,
        types=types,
        text=message.text,
        after_id=cursor,
        oldest_first=message.order == "oldest",
    )


async def _answer_log(ctx: Context, request_id: str, query: LogQuery, limit: int) -> None:
    """Read `limit` entries at most, a page at a time, and send them in frames that fit."""
    hub = ctx.hub
    limits = hub.config.limits
    budget = min(limits.max_message_bytes, limits.max_hub_message_bytes)
    batch: list[LogEntry] = []
    size = RESULT_OVERHEAD
    remaining = limit
    cursor = query.after_id
    asked = FIRST_READ  # the first entries come quickly; then larger reads
    exhausted = False
    while remaining > 0 and not exhausted:
        wanted = min(asked, remaining)
        page = await hub.store.query_log(dataclasses.replace(query, after_id=cursor), limit=wanted)
        exhausted = len(page) < wanted
        for entry in page:
            cost = len(entry.message) + ENTRY_OVERHEAD
            if RESULT_OVERHEAD + cost > budget:
                # Only the hub's own sends can be this large: HTTP streams them.
                _send_result(ctx, request_id, batch, str(cursor) if cursor else None, done=False)
                raise _Refusal(
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"log entry {entry.id} alone is larger than a frame may be; read it with "
                    f"GET /api/log?format=ndjson&cursor={cursor or ''}",
                )
            if size + cost > budget:
                _send_result(ctx, request_id, batch, str(batch[-1].id), done=False)
                batch, size = [], RESULT_OVERHEAD
            batch.append(entry)
            size += cost
            cursor = entry.id
            remaining -= 1
        asked = min(asked * 4, STREAM_PAGE)
        if ctx.peer.connection.state is State.CLOSED:
            return  # the asker left: read no further
    next_cursor = None if exhausted or cursor is None else str(cursor)
    _send_result(ctx, request_id, batch, next_cursor, done=True)


def _send_result(
    ctx: Context, request_id: str, entries: list[LogEntry], next_cursor: str | None, *, done: bool
) -> None:
    result = LogResult(id=request_id, entries=entries, next_cursor=next_cursor, done=done)
    _send(ctx, result, msgspec.structs.replace(result, entries=[]))


def _send(
    ctx: Context, message: LogResult | HistoryResult, logged: LogResult | HistoryResult
) -> None:
    """Send `message`, logging `logged` in its place (the same message, lighter)."""
    peer = ctx.peer
    if peer.connection.state is State.CLOSED:
        return
    ctx.hub.traffic.message("out", peer.name, logged, encode(logged))
    peer.send(encode(message))


async def history_query(ctx: Context, message: QueryHistory) -> None:
    """Answer a `history_query` with a `history_result`, or an `error` with its id."""
    ctx.log_in(message)
    hub = ctx.hub
    principal = hub.auth.principal(ctx.peer)
    try:
        if principal is None or not principal.may_watch(message.instrument):
            raise _Refusal(
                ErrorCode.FORBIDDEN, f"may not read the history of {message.instrument!r}"
            )
        history = await _history(hub, message)
    except _Refusal as refusal:
        ctx.send(Error(code=refusal.code, message=str(refusal), id=message.id))
        return
    except StoreError as exc:
        ctx.send(Error(code=ErrorCode.INTERNAL_ERROR, message=str(exc), id=message.id))
        return
    result = HistoryResult(id=message.id, history=history)
    frame_bytes = len(encode(result))
    limits = hub.config.limits
    budget = min(limits.max_message_bytes, limits.max_hub_message_bytes)
    if frame_bytes > budget:
        ctx.send(
            Error(
                code=ErrorCode.INVALID_ARGUMENTS,
                message=f"the answer would be {frame_bytes:,} bytes, more than the {budget:,} an "
                "answer may be: ask fewer points, a larger every, or name channels",
                id=message.id,
            )
        )
        return
    empty = msgspec.structs.replace(history, t=[], series={}, corrected={})
    _send(ctx, result, HistoryResult(id=message.id, history=empty))


async def _history(hub: Hub, message: QueryHistory) -> History:
    """The downsampled history a `history_query` asks for, with the HTTP route's checks."""
    now = hub.clock()
    until = now if message.until is None else message.until
    since = until - DEFAULT_RANGE_S if message.since is None else message.since
    if since >= until:
        raise _Refusal(
            ErrorCode.INVALID_ARGUMENTS, f"since ({since}) must be before until ({until})"
        )
    points = DEFAULT_POINTS if message.points is None else message.points
    if points > MAX_BUCKETS:
        raise _Refusal(ErrorCode.INVALID_ARGUMENTS, f"points must be 1..{MAX_BUCKETS}")
    every = message.every
    if every is None:
        every = (until - since) / points
    elif (until - since) / every > MAX_BUCKETS:
        raise _Refusal(
            ErrorCode.INVALID_ARGUMENTS,
            f"every={every:g} s cuts {until - since:g} s into more than {MAX_BUCKETS} "
            "buckets: ask a larger every or a shorter range",
        )
    channels: list[str] = []
    for name in message.channels:
        if not is_name(name):
            raise _Refusal(ErrorCode.INVALID_ARGUMENTS, f"channel: not a channel name: {name!r}")
        if name not in channels:
            channels.append(name)
    # Raw and, where a calibration was in force, corrected: as over HTTP.
    return await load_history(hub, message.instrument, since, until, every, channels)
