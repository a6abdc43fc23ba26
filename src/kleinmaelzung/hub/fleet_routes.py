"""The fleet over HTTP and the agents' side of configuration: `kmz agent-config` behind
``/api/agents/AGENT/config``, and the handlers of `agent_info` and `config_result`.

Every route here needs admin (`auth.web` closes any route it does not name).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import msgspec
from aiohttp import web

from ..protocol import (
    AgentInfo,
    ConfigChange,
    ConfigOutcome,
    ConfigResult,
    Error,
    ErrorCode,
    ErrorInfo,
    PeerKind,
    Status,
    is_instrument_id,
)
from .auth.web import principal_of
from .errors import Conflict
from .fleet import ChangeRefused, JsonFleetStore, audit_entry, config_diff
from .handlers import Context
from .services import HUB_KEY, Hub

_log = logging.getLogger(__name__)

#: A configuration body at most (the agent takes 256 KiB of TOML).
MAX_BODY_BYTES = 300_000
#: The fleet's file in the hub's data directory.
FLEET_FILE = "fleet.json"


def install(app: web.Application, hub: Hub) -> None:
    """Keep the fleet in the data directory; serve its routes; handle what agents say of it."""
    hub.fleet.store = JsonFleetStore(hub.config.data_dir / FLEET_FILE)
    app.cleanup_ctx.append(_keep)
    hub.handlers.register(PeerKind.AGENT, AgentInfo, agent_info)
    hub.handlers.register(PeerKind.AGENT, ConfigResult, config_result)
    app.router.add_get("/api/agents/{agent}/config", get_config)
    app.router.add_put("/api/agents/{agent}/config", put_config)
    app.router.add_post("/api/agents/{agent}/config/rollback", rollback_config)


async def _keep(app: web.Application) -> AsyncIterator[None]:
    fleet = app[HUB_KEY].fleet
    fleet.load()
    keeper = app[HUB_KEY].tasks
    keeper.spawn(fleet.keep(), "kmz-fleet")
    yield
    fleet.save_now()


# --- from agents -----------------------------------------------------------------------


async def agent_info(ctx: Context, message: AgentInfo) -> None:
    """An agent says who it is and what it runs; with `instruments`, it serves those now."""
    hub, peer = ctx.hub, ctx.peer
    ctx.log_in(message)
    agent = hub.registry.agents.get(peer.name)
    if agent is None or agent.peer is not peer:
        return
    now = hub.clock()
    if message.instruments is not None:
        limit = hub.config.limits.max_instruments_per_agent
        if len(message.instruments) > limit:
            ctx.send(
                Error(
                    code=ErrorCode.TOO_MANY_INSTRUMENTS,
                    message=f"{len(message.instruments)} instruments; an agent serves {limit} "
                    "at most",
                )
            )
            return
        reason = f"removed from agent {peer.name!r} by configuration {message.config_revision}"
        try:
            new, added, gone = hub.registry.set_agent_instruments(
                peer.name, message.instruments, reason, now
            )
        except Conflict as exc:
            ctx.send(Error(code=ErrorCode.DUPLICATE_ID, message=str(exc)))
            return
        for instrument_id in new:
            hub.subscriptions.instrument_added(instrument_id)
        for instrument_id in added + gone:
            entry = hub.registry.instruments[instrument_id]
            hub.traffic.remember_instrument(entry.info, entry.agent, entry.last_seen)
            hub.fanout.publish_status(
                Status(
                    instrument=instrument_id,
                    state=entry.state,
                    ts=now,
                    reason=entry.reason,
                    lease=entry.lease,
                )
            )
    hub.fleet.informed(peer.name, message, now)


async def config_result(ctx: Context, message: ConfigResult) -> None:
    """An agent's answer to a configuration it was sent."""
    ctx.log_in(message)
    if not ctx.hub.fleet.answered(ctx.peer.name, message):
        _log.warning(
            "configuration result nobody waits for",
            extra={"agent": ctx.peer.name, "id": message.id},
        )


# --- REST ------------------------------------------------------------------------------

#: The HTTP status of a change the agent did not run, by its code (others: 502).
_RESULT_STATUS: dict[str, int] = {
    ErrorCode.INVALID_CONFIG: 422,
    ErrorCode.REMOTE_CONFIG_REFUSED: 409,
    ErrorCode.OUTCOME_UNKNOWN: 504,
}


def _problem(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        body=msgspec.json.encode({"code": code, "message": message}),
        status=status,
        content_type="application/json",
    )


def _agent_id(request: web.Request) -> str:
    agent_id = request.match_info["agent"]
    if not is_instrument_id(agent_id):  # agent ids follow the instrument id rule
        raise ChangeRefused(400, ErrorCode.INVALID_ARGUMENTS, f"not an agent id: {agent_id!r}")
    return agent_id


async def get_config(request: web.Request) -> web.Response:
    """`GET /api/agents/{agent}/config`: what the agent runs, and the revisions held."""
    hub = request.app[HUB_KEY]
    try:
        agent_id = _agent_id(request)
        view = hub.fleet.view(agent_id, online=agent_id in hub.registry.agents)
    except ChangeRefused as exc:
        return _problem(exc.status, exc.code, exc.message)
    return web.Response(body=msgspec.json.encode(view), content_type="application/json")


async def put_config(request: web.Request) -> web.Response:
    """`PUT /api/agents/{agent}/config`: send a configuration; answer with the agent's outcome."""
    try:
        change = await _body(request, ConfigChange)
    except ChangeRefused as exc:
        return _problem(exc.status, exc.code, exc.message)
    return await _change(request, change.config, change.source, rollback=False)


async def rollback_config(request: web.Request) -> web.Response:
    """`POST /api/agents/{agent}/config/rollback`: run the revision before the current one again."""
    return await _change(request, "", "", rollback=True)


async def _body(request: web.Request, kind: type[ConfigChange]) -> ConfigChange:
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise ChangeRefused(
            413, ErrorCode.MESSAGE_TOO_LARGE, f"the body is over {MAX_BODY_BYTES} bytes"
        )
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.DecodeError as exc:
        raise ChangeRefused(400, ErrorCode.INVALID_ARGUMENTS, f"{request.path}: {exc}") from None


async def _change(
    request: web.Request, config: str, source: str, *, rollback: bool
) -> web.Response:
    hub = request.app[HUB_KEY]
    by = principal_of(request).name
    try:
        agent_id = _agent_id(request)
        entry = hub.registry.agents.get(agent_id)
        protocol = entry.hello.protocol if entry is not None else None
        push, before = hub.fleet.prepare(agent_id, protocol, config, source, rollback)
    except ChangeRefused as exc:
        return _problem(exc.status, exc.code, exc.message)
    assert entry is not None
    running_before = hub.fleet.view(agent_id, online=True).revision
    diff = config_diff(agent_id, before, running_before, push)
    hub.fanout.send(entry.peer, push)
    result = await hub.fleet.wait_result(agent_id, push)
    hub.fleet.settle(agent_id, push, result, by, hub.clock(), rollback)
    outcome = ConfigOutcome(
        agent=agent_id,
        revision=push.revision,
        running=result.revision,
        ok=result.ok,
        error=result.error,
        instruments=result.instruments,
        diff=diff,
    )
    action = "rollback" if rollback else "set"
    hub.traffic.event(
        by,
        "agent_config",
        audit_entry(agent_id=agent_id, action=action, by=by, diff=diff, outcome=outcome),
    )
    _log.info(
        "agent configuration " + ("run" if result.ok else "refused"),
        extra={"agent": agent_id, "revision": push.revision, "by": by, "action": action},
    )
    if not result.ok:
        error = result.error or ErrorInfo(code=ErrorCode.INTERNAL_ERROR, message="no reason given")
        return _problem(_RESULT_STATUS.get(error.code, 502), error.code, error.message)
    return web.Response(body=msgspec.json.encode(outcome), content_type="application/json")
