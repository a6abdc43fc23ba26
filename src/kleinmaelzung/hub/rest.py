"""The HTTP API: health, instruments, agents, the traffic log (the dashboard: `dashboard`)."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from .. import __version__
from ..protocol import ErrorCode, LogEntry, LogPage, PeerKind, is_instrument_id
from ..protocol.asyncapi import asyncapi_document
from .auth.web import log_types, principal_of, visible_agents
from .services import HUB_KEY

#: Entries a log query reads first; each further read asks for 4x more.
FIRST_LOG_PAGE = 16


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(payload), status=status, content_type="application/json"
    )


def _bad_request(code: str, message: str) -> web.Response:
    return _json({"code": code, "message": message}, status=400)


async def health(request: web.Request) -> web.Response:
    """`GET /api/health`: is the hub up, how busy, and whether its log keeps up (and if not why)."""
    hub = request.app[HUB_KEY]
    log = hub.store.health
    return _json(
        {
            "status": log.state,
            "hub": hub.config.name,
            "version": __version__,
            "uptime_s": round(time.monotonic() - hub.started, 3),
            "agents": len(hub.registry.agents),
            "clients": sum(1 for p in hub.peers if p.kind is PeerKind.CLIENT),
            "instruments": len(hub.registry.instruments),
            "log_backlog": hub.store.backlog,
            "log": {"state": log.state, "reason": log.reason},
        }
    )


async def ready(request: web.Request) -> web.Response:
    """`GET /api/ready`: may this hub take traffic now? 503, with the reasons, while it may not.

    For a load balancer or an orchestrator's readiness probe: ready while the
    traffic log keeps up (while it is degraded, samples are forwarded but not
    logged, and agents are better served by a hub whose log works).
    """
    hub = request.app[HUB_KEY]
    log = hub.store.health
    reasons = [log.reason or "the traffic log is degraded"] if log.state != "ok" else []
    return _json({"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200)


async def asyncapi(request: web.Request) -> web.Response:
    """`GET /api/asyncapi.json`: the WebSocket protocol as an AsyncAPI 3.0 document.

    Generated from the message types (`protocol.asyncapi`), for this hub's
    address as the caller reached it; public, like the protocol's docs.
    """
    document = asyncapi_document(request.host, "wss" if request.secure else "ws")
    return _json(document)


async def instruments(request: web.Request) -> web.Response:
    """`GET /api/instruments`: every known instrument the caller may watch, with its state."""
    may_watch = principal_of(request).may_watch
    return _json([r for r in request.app[HUB_KEY].registry.records() if may_watch(r.id)])


async def agents(request: web.Request) -> web.Response:
    """`GET /api/agents`: connected agents, their spools, clocks and logged seqs."""
    hub = request.app[HUB_KEY]
    return _json(
        visible_agents(
            principal_of(request), hub.registry.agent_records(hub.config.clock_warning_s)
        )
    )


async def forget_instrument(request: web.Request) -> web.Response:
    """`DELETE /api/instruments/{id}`: stop listing an instrument whose agent is gone."""
    hub = request.app[HUB_KEY]
    instrument_id = request.match_info["instrument"]
    if not is_instrument_id(instrument_id):
        return _bad_request(
            ErrorCode.INVALID_INSTRUMENT_ID, f"not an instrument id: {instrument_id!r}"
        )
    if instrument_id not in hub.registry.instruments:
        return _json(
            {
                "code": ErrorCode.UNKNOWN_INSTRUMENT,
                "message": f"no instrument {instrument_id!r} is known",
            },
            status=404,
        )
    if not hub.registry.forget(instrument_id):
        return _json(
            {
                "code": ErrorCode.INSTRUMENT_ONLINE,
                "message": f"instrument {instrument_id!r} is served by a connected agent; "
                "stop the agent or remove it from the agent's config first",
            },
            status=409,
        )
    hub.traffic.forget_instrument(instrument_id)
    return _json({"forgotten": instrument_id})


async def traffic_log(request: web.Request) -> web.Response:
    """`GET /api/log?instrument=ID&limit=N&kind=K`: newest traffic-log entries first."""
    hub = request.app[HUB_KEY]
    instrument = request.query.get("instrument")
    kind = request.query.get("kind")
    types = log_types(kind) if kind is not None else ()
    if types is None:
        return _bad_request(ErrorCode.INVALID_ARGUMENTS, f"not a kind of log entry: {kind!r}")
    if instrument is not None and not is_instrument_id(instrument):
        return _bad_request(
            ErrorCode.INVALID_INSTRUMENT_ID, f"not an instrument id: {instrument!r}"
        )
    raw_limit = request.query.get("limit", "100")
    try:
        limit = int(raw_limit)
    except ValueError:
        return _bad_request(
            ErrorCode.INVALID_ARGUMENTS, f"limit must be an integer, got {raw_limit!r}"
        )
    limits = hub.config.limits
    if not 1 <= limit <= limits.max_log_entries:
        return _bad_request(
            ErrorCode.INVALID_ARGUMENTS, f"limit must be 1..{limits.max_log_entries}, got {limit}"
        )
    # The answer keeps the 1 MiB rule the hub asks of every peer. Reading
    # `limit` entries at once held ~200 MB for limit=10000 (656 MB for three
    # at once) to answer with what fits; reading 4x more each time until the
    # answer is full holds a few MiB, and costs at most a third more reading.
    budget = min(limits.max_message_bytes, limits.max_hub_message_bytes)
    asked = min(limit, FIRST_LOG_PAGE)
    while True:
        entries = await hub.store.query(instrument=instrument, limit=asked, types=types)
        fitting = _within(entries, budget)
        if len(fitting) < len(entries) or len(entries) < asked or asked == limit:
            return _json(LogPage(entries=fitting))
        asked = min(limit, asked * 4)


#: A log entry's fields besides its message, encoded, at most (bytes).
_ENTRY_OVERHEAD = 512


def _within(entries: list[LogEntry], max_bytes: int) -> list[LogEntry]:
    """The newest entries whose answer fits in `max_bytes`, as every answer of the hub does."""
    total = len(b'{"entries":[]}')
    for index, entry in enumerate(entries):
        total += len(entry.message) + _ENTRY_OVERHEAD
        if total > max_bytes:
            return entries[:index]
    return entries
