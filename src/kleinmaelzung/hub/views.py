"""The WebSocket endpoints: handshake, the receive loop, and cleanup when a peer leaves."""

from __future__ import annotations

import contextlib
import itertools
import logging
import uuid
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from ..protocol import (
    PROTOCOL_VERSION,
    AgentHello,
    ClientHello,
    CloseCode,
    Error,
    ErrorCode,
    HubConnection,
    PeerKind,
    Received,
    Refused,
    Status,
    Welcome,
    encode,
    hub_agent_connection,
    hub_client_connection,
)
from .handlers import Context, dispatch
from .peers import Peer
from .registry import Conflict
from .services import HUB_KEY, Hub

_log = logging.getLogger(__name__)
_client_numbers = itertools.count(1)


async def agent_endpoint(request: web.Request) -> web.WebSocketResponse:
    """`/ws/agent`: one agent's connection."""
    return await _serve(request, PeerKind.AGENT)


async def client_endpoint(request: web.Request) -> web.WebSocketResponse:
    """`/ws/client`: one client's connection."""
    return await _serve(request, PeerKind.CLIENT)


async def _serve(request: web.Request, kind: PeerKind) -> web.WebSocketResponse:
    hub = request.app[HUB_KEY]
    limits = hub.config.limits
    ws = web.WebSocketResponse(
        heartbeat=hub.config.timeouts.heartbeat_s,
        # Frames up to 4x the limit reach the codec and get a typed
        # message_too_large error; beyond that aiohttp closes (1009) rather
        # than buffer an unbounded frame.
        max_msg_size=4 * limits.max_message_bytes,
    )
    await ws.prepare(request)
    connection = (
        hub_agent_connection(limits) if kind is PeerKind.AGENT else hub_client_connection(limits)
    )
    peer = await _handshake(hub, ws, connection, kind)
    if peer is None:
        return ws
    hub.peers.add(peer)
    try:
        await _receive_loop(hub, ws, peer)
    finally:
        hub.peers.discard(peer)
        _leave(hub, peer)
        await peer.close()
        if not ws.closed:
            await ws.close()
        if kind is PeerKind.CLIENT:
            _log.info("peer left", extra={"peer": peer.name, "close_code": ws.close_code})
    return ws


async def _handshake(
    hub: Hub, ws: web.WebSocketResponse, connection: HubConnection[Any], kind: PeerKind
) -> Peer | None:
    try:
        msg = await ws.receive(timeout=hub.config.timeouts.handshake_s)
    except TimeoutError:
        await _refuse(
            ws,
            Error(code=ErrorCode.HELLO_EXPECTED, message="no hello within the handshake timeout"),
            CloseCode.HANDSHAKE_TIMEOUT,
        )
        return None
    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return None
    result = connection.receive(msg.data)
    if isinstance(result, Refused):
        await _refuse(ws, result.error, result.close or CloseCode.HELLO_EXPECTED)
        return None
    hello = result.message
    frame = _frame(msg.data)
    if isinstance(hello, AgentHello):
        try:
            hub.registry.check_hello(hello)
        except Conflict as exc:
            await _refuse(
                ws, Error(code=ErrorCode.DUPLICATE_ID, message=str(exc)), CloseCode.DUPLICATE_AGENT
            )
            return None
        name = hello.agent_id
    else:
        assert isinstance(hello, ClientHello)
        suffix = f"/{hello.name}" if hello.name else ""
        name = f"client-{next(_client_numbers)}{suffix}"
    # Before the welcome: once welcomed, the agent's instruments must be known.
    logged = await _logged_seqs(hub, hello) if isinstance(hello, AgentHello) else {}
    peer = Peer(kind, name, ws, connection, queue_frames=hub.config.limits.client_queue_frames)
    peer.start()
    hub.router.log("in", name, _redacted(hello), _redacted_frame(hello, frame))
    hub.router.send(
        peer,
        Welcome(
            protocol=PROTOCOL_VERSION,
            hub=hub.config.name,
            session=uuid.uuid4().hex,
            server_time=hub.clock(),
            clock=hub.router.monotonic(),
        ),
    )
    if isinstance(hello, AgentHello):
        await _join_agent(hub, peer, hello, logged)
    _log.info("peer connected", extra={"peer": name, "kind": str(kind)})
    return peer


async def _logged_seqs(hub: Hub, hello: AgentHello) -> dict[str, int]:
    """What the traffic log holds of this agent run, for instruments the hub has forgotten."""
    # A hub that restarted remembers nothing of this run but what it logged:
    # samples the agent sends again (unacknowledged when the hub went away)
    # must be recognised as already logged.
    unknown = [
        info.id
        for info in hello.instruments
        if (entry := hub.registry.instruments.get(info.id)) is None or entry.run != hello.run
    ]
    return await hub.store.last_seqs(hello.run, unknown) if hello.run and unknown else {}


async def _join_agent(hub: Hub, peer: Peer, hello: AgentHello, logged: dict[str, int]) -> None:
    previous = hub.registry.agents.get(hello.agent_id)
    if previous is not None:
        # The same agent again: most often a Pi that rebooted before the hub
        # noticed its old connection died. The newer connection wins.
        _log.warning("agent reconnected; closing its old connection", extra={"agent": peer.name})
        _leave(hub, previous.peer, reason="replaced by a newer connection")
        await previous.peer.ws.close(code=CloseCode.DUPLICATE_AGENT, message=b"replaced")
    before = {
        info.id: (entry.state, entry.reason)
        for info in hello.instruments
        if (entry := hub.registry.instruments.get(info.id)) is not None
    }
    for instrument_id in hub.registry.add_agent(peer, hello, hub.clock()):
        hub.router.instrument_added(instrument_id)
    for instrument_id, seq in logged.items():
        entry = hub.registry.instruments[instrument_id]
        entry.last_seq = max(entry.last_seq, seq)
    for info in hello.instruments:
        if before.get(info.id) != ("online", ""):
            hub.router.publish_status(Status(instrument=info.id, state="online", ts=hub.clock()))


async def _receive_loop(hub: Hub, ws: web.WebSocketResponse, peer: Peer) -> None:
    async for msg in ws:
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            continue
        result = peer.connection.receive(msg.data)
        if isinstance(result, Refused):
            hub.router.log("in", peer.name, result.error, _refused_frame(msg.data))
            hub.router.send(peer, result.error)
            if result.close is not None:
                await ws.close(code=result.close)
                return
            continue
        assert isinstance(result, Received)
        ctx = Context(
            registry=hub.registry,
            router=hub.router,
            store=hub.store,
            clock=hub.clock,
            peer=peer,
            frame=_frame(msg.data),
        )
        try:
            await dispatch(ctx, result.message)
        except Exception:
            _log.exception("handler failed", extra={"peer": peer.name})
            hub.router.send(
                peer, Error(code=ErrorCode.INTERNAL_ERROR, message="the hub failed to handle this")
            )
        if peer.kind is PeerKind.AGENT:
            # Not reading is the backpressure: the agent keeps what is unacknowledged.
            await hub.store.wait_for_room()


def _leave(hub: Hub, peer: Peer, reason: str = "agent disconnected") -> None:
    """Undo everything a peer's presence set up; idempotent."""
    hub.router.remove_peer(peer)
    if peer.kind is not PeerKind.AGENT:
        return
    offline = hub.registry.remove_agent(peer.name, peer, reason)
    hub.router.agent_left(peer.name, reason)
    now = hub.clock()
    for instrument_id in offline:
        hub.router.publish_status(
            Status(instrument=instrument_id, state="offline", ts=now, reason=reason)
        )
    if offline:
        _log.info("agent left", extra={"agent": peer.name, "reason": reason})


async def _refuse(ws: web.WebSocketResponse, error: Error, close: CloseCode) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_frame(encode(error), WSMsgType.TEXT)
        await ws.close(code=close, message=error.code.encode())


def _frame(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _refused_frame(data: str | bytes) -> bytes:
    # Refused input need not be JSON, but every logged message must be: keep
    # its first 4 KiB as a JSON string, so the log and /api/log stay readable.
    text = data if isinstance(data, str) else data.decode("utf-8", errors="replace")
    return msgspec.json.encode(text[:4096])


def _redacted(hello: AgentHello | ClientHello) -> AgentHello | ClientHello:
    return msgspec.structs.replace(hello, token="***") if hello.token else hello


def _redacted_frame(hello: AgentHello | ClientHello, frame: bytes) -> bytes:
    # Credentials never reach the traffic log.
    return encode(_redacted(hello)) if hello.token else frame
