"""The HTTP API: health, readiness, the protocol document, instruments, agents (log: `log_api`)."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from .. import __version__
from ..protocol import ErrorCode, PeerKind, is_instrument_id
from ..protocol.asyncapi import asyncapi_document
from .auth.web import principal_of, visible_agents
from .services import HUB_KEY


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
    """`GET /api/agents`: every agent seen, online or not; spools, clocks, configuration."""
    hub = request.app[HUB_KEY]
    records = hub.fleet.records(hub.registry, hub.config.clock_warning_s)
    return _json(visible_agents(principal_of(request), records))


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
