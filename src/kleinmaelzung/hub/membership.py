"""Peers joining and leaving: the hello accepted or refused, and everything undone on leaving.

Joining and leaving are handlers like the others (they change the hub's state
only through its services); the web layer calls them around a connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from ..protocol import (
    PROTOCOL_VERSION,
    AgentHello,
    ClientHello,
    CloseCode,
    Error,
    ErrorCode,
    HubConnection,
    PeerKind,
    Status,
    Welcome,
    encode,
    printable,
)
from .auth.guard import AuthRefusal, admit, adopt_leases
from .errors import Conflict
from .peers import Peer

if TYPE_CHECKING:
    from .services import Hub

_log = logging.getLogger(__name__)

#: A client's `name` as it appears in peer names and the log, at most.
MAX_CLIENT_NAME_CHARS = 64


@dataclass(frozen=True, slots=True)
class Refusal:
    """A hello the hub will not accept: send `error`, close with `close`."""

    error: Error
    close: CloseCode


async def join(
    hub: Hub,
    ws: web.WebSocketResponse,
    connection: HubConnection[Any],
    hello: AgentHello | ClientHello,
    frame: bytes,
    header_token: str | None = None,
) -> Peer | Refusal:
    """Welcome a peer whose hello was valid and whose credentials hold, or say why not."""
    principal = admit(hub, hello, header_token)
    if isinstance(principal, AuthRefusal):
        # One line per refused handshake (never the token): what an intrusion
        # detector (fail2ban) reads; the traffic log keeps the refused frame.
        _log.warning(
            "credentials refused",
            extra={
                "remote": _remote(ws),
                "code": principal.error.code,
                "reason": principal.error.message,
            },
        )
        return Refusal(principal.error, CloseCode(principal.close))
    if isinstance(hello, AgentHello):
        joined = await _join_agent(hub, ws, connection, hello, frame)
        if isinstance(joined, Peer):
            hub.auth.attach(joined, principal)
        return joined
    # The name is the client's free text and goes into log lines: a newline
    # in it forged lines in the hub's log. With auth, the user's name follows
    # (`@alice`): every command in the log names the person who sent it.
    suffix = f"/{printable(hello.name, MAX_CLIENT_NAME_CHARS)}" if hello.name else ""
    user = f"@{principal.name}" if principal.token_id is not None else ""
    name = f"client-{hub.boot_id}.{next(hub.client_numbers)}{suffix}{user}"
    peer = _welcome(hub, PeerKind.CLIENT, name, ws, connection, hello, frame)
    hub.auth.attach(peer, principal)
    _log.info("client joined", extra={"peer": name})
    return peer


async def _join_agent(
    hub: Hub,
    ws: web.WebSocketResponse,
    connection: HubConnection[Any],
    hello: AgentHello,
    frame: bytes,
) -> Peer | Refusal:
    registry = hub.registry
    try:
        registry.check_hello(hello)
    except Conflict as exc:
        return Refusal(
            Error(code=ErrorCode.DUPLICATE_ID, message=str(exc)), CloseCode.DUPLICATE_AGENT
        )
    limit = hub.config.limits.max_instruments
    served = registry.served_count(besides=hello.agent_id)
    if served + len(hello.instruments) > limit:
        # Many agents of 1000 instruments each would otherwise grow the
        # instrument list (and /api/instruments) without bound.
        _log.warning("agent refused: too many instruments", extra={"agent": hello.agent_id})
        return Refusal(
            Error(
                code=ErrorCode.TOO_MANY_INSTRUMENTS,
                message=f"connected agents serve {served} instruments; with these "
                f"{len(hello.instruments)} the hub would serve more than its limit of {limit}",
            ),
            CloseCode.TOO_MANY_INSTRUMENTS,
        )
    # What the log holds of each run the agent sends is looked up when its
    # first frame of that run arrives (`handlers.agent_data`).
    peer = _welcome(hub, PeerKind.AGENT, hello.agent_id, ws, connection, hello, frame)
    previous = registry.agents.get(hello.agent_id)
    if previous is not None:
        # The newer connection wins: most often a Pi that rebooted before the
        # hub noticed its old connection died. If the old one is alive, two
        # agents share an id: it is told so and stops (it does not take the
        # id back, which would make them replace each other forever).
        where = _remote(ws)
        reason = f"replaced by a newer connection of agent {hello.agent_id!r} from {where}"
        _log.warning("agent replaced", extra={"agent": hello.agent_id, "by": where})
        old = previous.peer
        hub.fanout.send(old, Error(code=ErrorCode.DUPLICATE_AGENT, message=reason))
        leave(hub, old, reason="replaced by a newer connection")
        hub.tasks.spawn(old.disconnect(CloseCode.DUPLICATE_AGENT, "replaced"), "kmz-replace")
    before = {
        info.id: (entry.state, entry.reason)
        for info in hello.instruments
        if (entry := registry.instruments.get(info.id)) is not None
    }
    for instrument_id in registry.add_agent(peer, hello, hub.clock()):
        hub.subscriptions.instrument_added(instrument_id)
    # Before any command can reach it: a lease another hub held holds here.
    adopt_leases(hub, [info.id for info in hello.instruments])
    hub.fleet.joined(hello, hub.clock())
    now = hub.clock()
    for info in hello.instruments:
        hub.traffic.remember_instrument(info, hello.agent_id, None)
        if before.get(info.id) != ("online", ""):
            lease = registry.instruments[info.id].lease
            hub.fanout.publish_status(
                Status(instrument=info.id, state="online", ts=now, lease=lease)
            )
    _log.info(
        "agent joined", extra={"agent": hello.agent_id, "instruments": len(hello.instruments)}
    )
    return peer


def _welcome(
    hub: Hub,
    kind: PeerKind,
    name: str,
    ws: web.WebSocketResponse,
    connection: HubConnection[Any],
    hello: AgentHello | ClientHello,
    frame: bytes,
) -> Peer:
    peer = Peer(kind, name, ws, connection, queue_frames=hub.config.limits.client_queue_frames)
    peer.start()
    hub.peers.add(peer)
    # Credentials never reach the traffic log.
    if hello.token:
        hello = msgspec.structs.replace(hello, token="***")
        frame = encode(hello)
    hub.traffic.message("in", name, hello, frame)
    hub.fanout.send(
        peer,
        Welcome(
            # The version spoken on this connection: the peer's (3 or 4).
            protocol=min(hello.protocol, PROTOCOL_VERSION),
            hub=hub.config.name,
            session=f"{hub.boot_id}.{id(peer):x}",
            server_time=hub.clock(),
            clock=hub.commands.monotonic(),
        ),
    )
    return peer


def leave(hub: Hub, peer: Peer, reason: str = "agent disconnected") -> None:
    """Undo everything a peer's presence set up; idempotent."""
    hub.peers.discard(peer)
    hub.auth.detach(peer)
    hub.subscriptions.remove_peer(peer)
    if peer.kind is PeerKind.CLIENT:
        hub.commands.client_left(peer)
        return
    entry = hub.registry.agents.get(peer.name)
    run = entry.hello.run if entry is not None and entry.peer is peer else None
    offline = hub.registry.remove_agent(peer.name, peer, reason, hub.clock())
    if not offline and run is None:
        return  # an older connection of an agent that has a newer one
    hub.commands.agent_left(peer.name, reason)
    if run is not None:
        hub.acks.forget(peer.name)
        hub.fleet.left(peer.name, hub.clock(), reason)
    now = hub.clock()
    for instrument_id in offline:
        entry_ = hub.registry.instruments[instrument_id]
        hub.traffic.remember_instrument(entry_.info, entry_.agent, entry_.last_seen)
        hub.fanout.publish_status(
            Status(
                instrument=instrument_id,
                state="offline",
                ts=now,
                reason=reason,
                lease=entry_.lease,
            )
        )
    # Within the cap on remembered instruments (a registration flood).
    for evicted in hub.registry.evict_offline():
        hub.traffic.forget_instrument(evicted)
    _log.info("agent left", extra={"agent": peer.name, "reason": reason})


def _remote(ws: web.WebSocketResponse) -> str:
    peername = ws.get_extra_info("peername")
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return "an unknown address"
