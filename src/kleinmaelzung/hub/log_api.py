"""``GET /api/log``: the traffic log, filtered, paged by cursor, or streamed as NDJSON.

Parameters (all optional)::

    instrument=ID or GLOB   kind=TYPE|command|refused   direction=in|out
    peer=GLOB               text=TEXT                   since=T   until=T
    order=newest|oldest     limit=N                     cursor=C  format=json|ndjson

Times are UNIX seconds, ``-1h``-style relative to the hub's clock, or ISO
8601 (UTC unless they name a zone). ``format=json`` (the default) answers
``{"entries": [...], "next_cursor": "..."}`` with at most `limit` entries
(1..10000, default 100) and never more than the 1 MiB the hub allows any
message; ``next_cursor``, present when there may be more, is passed back as
``cursor=`` for the next page (keyset: each page costs the same, however
deep). ``format=ndjson`` streams every matching entry (up to `limit`, if
given) one JSON object per line, read from the log a page at a time.

Who may ask (checked in `auth.web` before this runs, and again here): a
viewer, for an instrument or a pattern within their grant; the whole log, or
any query without an instrument, needs admin.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from ..protocol import LogEntry, LogPage
from .auth.web import log_types, principal_of
from .params import (
    BadParameter,
    choice_param,
    int_param,
    pattern_param,
    problem,
    time_param,
)
from .services import HUB_KEY
from .store.queries import LogQuery

#: Entries the first read of a JSON page asks for; each further read 4x more.
FIRST_READ = 16
#: Entries read per page while streaming NDJSON.
STREAM_PAGE = 1000
#: A log entry's fields besides its message, encoded, at most (bytes).
ENTRY_OVERHEAD = 512

_encoder = msgspec.json.Encoder()


def read_query(request: web.Request) -> tuple[LogQuery, int | None, str]:
    """The query, the limit (None: all, for NDJSON) and the format of a request."""
    hub = request.app[HUB_KEY]
    params = request.query
    now = hub.clock()
    kind = params.get("kind")
    types = log_types(kind) if kind is not None else ()
    if types is None:
        raise BadParameter(f"not a kind of log entry: {kind!r}")
    direction = params.get("direction")
    if direction not in (None, "in", "out"):
        raise BadParameter(f"direction must be in or out, got {direction!r}")
    peer = params.get("peer")
    if peer is not None and not (0 < len(peer) <= 200 and peer.isprintable()):
        raise BadParameter("peer must be 1 to 200 printable characters")
    text = params.get("text")
    if text is not None and len(text) > 200:
        raise BadParameter("text must be at most 200 characters")
    raw_cursor = params.get("cursor")
    cursor = None
    if raw_cursor:
        if not raw_cursor.isdigit():
            raise BadParameter(f"not a cursor of this log: {raw_cursor!r}")
        cursor = int(raw_cursor)
    order = choice_param(params, "order", ("newest", "oldest"))
    output = choice_param(params, "format", ("json", "ndjson"))
    maximum = hub.config.limits.max_log_entries
    limit: int | None
    if output == "ndjson" and "limit" not in params:
        limit = None
    else:
        high = maximum if output == "json" else 1 << 62
        limit = int_param(params, "limit", 100, 1, high)
    query = LogQuery(
        since=time_param(params, "since", now=now),
        until=time_param(params, "until", now=now),
        instrument=pattern_param(params, "instrument"),
        peer=peer,
        direction=direction,  # type: ignore[arg-type]  # checked above
        types=types,
        text=text or None,
        after_id=cursor,
        oldest_first=order == "oldest",
    )
    return query, limit, output


async def traffic_log(request: web.Request) -> web.StreamResponse:
    """`GET /api/log`: log entries matching the filters, a page or a stream."""
    try:
        query, limit, output = read_query(request)
    except BadParameter as exc:
        return problem(exc)
    principal = principal_of(request)
    if not (
        principal.is_admin
        or (query.instrument is not None and principal.may_subscribe(query.instrument))
    ):
        # `auth.web` refused this already; a second look costs nothing.
        return problem(BadParameter("the whole log needs admin", "forbidden"), status=403)
    if output == "ndjson":
        return await _stream(request, query, limit)
    assert limit is not None
    return await _page(request, query, limit)


async def _page(request: web.Request, query: LogQuery, limit: int) -> web.Response:
    hub = request.app[HUB_KEY]
    limits = hub.config.limits
    # The answer keeps the 1 MiB rule the hub asks of every peer. Reading
    # `limit` entries at once held ~200 MB for limit=10000 to answer with what
    # fits; reading a few, then 4x more after them, holds a few MiB.
    budget = min(limits.max_message_bytes, limits.max_hub_message_bytes)
    size = len(b'{"entries":[],"next_cursor":""}') + 20
    entries: list[LogEntry] = []
    cursor = query.after_id
    asked = FIRST_READ
    exhausted = cut = False
    while len(entries) < limit and not exhausted and not cut:
        wanted = min(asked, limit - len(entries))
        read = await hub.store.query_log(_after(query, cursor), limit=wanted)
        exhausted = len(read) < wanted
        for entry in read:
            size += len(entry.message) + ENTRY_OVERHEAD
            if size > budget:
                cut = True  # the rest is on the next page
                break
            entries.append(entry)
        if read:
            cursor = read[-1].id
        asked *= 4
    if cut and not entries:
        return problem(
            BadParameter("the first entry alone is larger than an answer may be: use format=ndjson")
        )
    next_cursor = str(entries[-1].id) if entries and (cut or not exhausted) else None
    return web.Response(
        body=_encoder.encode(LogPage(entries=entries, next_cursor=next_cursor)),
        content_type="application/json",
    )


def _after(query: LogQuery, cursor: int | None) -> LogQuery:
    return LogQuery(
        since=query.since,
        until=query.until,
        instrument=query.instrument,
        peer=query.peer,
        direction=query.direction,
        types=query.types,
        text=query.text,
        after_id=cursor,
        oldest_first=query.oldest_first,
    )


async def _stream(request: web.Request, query: LogQuery, limit: int | None) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    sent = 0
    cursor = query.after_id
    while limit is None or sent < limit:
        wanted = STREAM_PAGE if limit is None else min(STREAM_PAGE, limit - sent)
        page = await hub.store.query_log(_after(query, cursor), limit=wanted)
        if page:
            # aiohttp's write waits while the peer is behind: memory stays a page.
            await response.write(b"".join(_encoder.encode(e) + b"\n" for e in page))
            sent += len(page)
            cursor = page[-1].id
        if len(page) < wanted:
            break
    await response.write_eof()
    return response
