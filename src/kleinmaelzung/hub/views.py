"""The WebSocket endpoints: I/O only; frames go to the connection's state machine, then handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import WSMsgType, web

from ..protocol import (
    AgentHello,
    ClientHello,
    CloseCode,
    Command,
    Error,
    ErrorCode,
    HubConnection,
    PeerKind,
    Received,
    Refused,
    encode,
    hub_agent_connection,
    hub_client_connection,
)
from .auth.guard import bearer
from .handlers import Context
from .membership import Refusal, join, leave
from .peers import Peer
from .rates import user_of
from .services import HUB_KEY, Hub

_log = logging.getLogger(__name__)


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
        # Pings so that a dead link is noticed within heartbeat_s (not 1.5x).
        heartbeat=hub.config.timeouts.ping_after_s,
        # Frames up to 4x the limit reach the codec and get a typed
        # message_too_large error; beyond that aiohttp closes (1009) rather
        # than buffer an unbounded frame.
        max_msg_size=4 * limits.max_message_bytes,
        # How long a close waits for the peer's close frame (aiohttp's default
        # is 10 s: a silent socket refused at the handshake deadline was held
        # 10 s past it).
        timeout=hub.config.timeouts.close_s,
        # No permessage-deflate: the same frame goes to every subscriber
        # (`peers.wire_frame`), where a compressor per connection would
        # compress it again for each and hold ~256 KiB of zlib state (1,000
        # refused handshakes grew the hub by 98 MB). JSON samples on a lab
        # network do not need it.
        compress=False,
    )
    await ws.prepare(request)
    connection = (
        hub_agent_connection(limits) if kind is PeerKind.AGENT else hub_client_connection(limits)
    )
    try:
        hello = await _receive_hello(hub, ws, connection, request)
        if hello is None:
            return ws
        joined = await join(
            hub, ws, connection, *hello, bearer(request.headers.get("Authorization"))
        )
        if isinstance(joined, Refusal):
            hub.traffic.refused(f"?{request.remote}", joined.error, hello[1])
            await _refuse(ws, joined.error, joined.close)
            return ws
        peer = joined
        try:
            await _receive_loop(hub, ws, peer)
        finally:
            leave(hub, peer)
            await peer.close()
            if not ws.closed:
                await ws.close()
            _log.info(
                "peer left",
                extra={
                    "peer": peer.name,
                    "close_code": ws.close_code,
                    "rate_refused": peer.connection.rate_refused,
                },
            )
    finally:
        _release(ws)
    return ws


def _release(ws: web.WebSocketResponse) -> None:
    """Let a closed WebSocket go now, not when its heartbeat next fires.

    aiohttp (3.14) re-arms the heartbeat timer when the peer's close frame
    arrives after ours; the timer holds the response and its buffers for
    another 10-30 s.
    """
    cancel = getattr(ws, "_cancel_heartbeat", None)
    if callable(cancel):
        cancel()


async def _receive_hello(
    hub: Hub, ws: web.WebSocketResponse, connection: HubConnection[Any], request: web.Request
) -> tuple[AgentHello | ClientHello, bytes] | None:
    """The peer's valid hello and its frame, or None once the peer has been refused."""
    try:
        msg = await ws.receive(timeout=hub.config.timeouts.handshake_s)
    except TimeoutError:
        error = Error(
            code=ErrorCode.HELLO_EXPECTED, message="no hello within the handshake timeout"
        )
        # A peer that sent nothing is owed no close handshake: the socket
        # goes at the deadline, not a close timeout later (it was held 10 s).
        with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
            async with asyncio.timeout(0.1):
                await ws.send_frame(encode(error), WSMsgType.TEXT)
                await _close_frame(ws, CloseCode.HANDSHAKE_TIMEOUT, error)
        if request.transport is not None:
            request.transport.abort()
        return None
    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return None
    result = connection.receive(msg.data)
    if isinstance(result, Refused):
        hub.traffic.refused(f"?{request.remote}", result.error, msg.data)
        await _refuse(ws, result.error, result.close or CloseCode.HELLO_EXPECTED)
        return None
    hello = result.message
    assert isinstance(hello, AgentHello | ClientHello)
    return hello, _frame(msg.data)


#: Refusals that mean a peer ran into a limit: logged once per connection.
_LIMITS = frozenset(
    {
        ErrorCode.RATE_LIMITED,
        ErrorCode.TOO_MANY_SUBSCRIPTIONS,
        ErrorCode.TOO_MANY_PENDING,
        ErrorCode.MESSAGE_TOO_LARGE,
        ErrorCode.NESTING_TOO_DEEP,
    }
)


#: Frames dropped unanswered (a flooding peer's) between two yields to the
#: other connections: without a yield one socket read of a flood held the
#: loop, and another client's p99 went from 9.6 ms to 91.5 ms; every 64: 18 ms.
YIELD_EVERY_DROPPED = 16


async def _receive_loop(hub: Hub, ws: web.WebSocketResponse, peer: Peer) -> None:
    loop = asyncio.get_running_loop()
    breached: set[str] = set()
    dropped = 0
    # Clients: one rate per user over all of the user's connections too.
    user = user_of(peer.name) if peer.kind is PeerKind.CLIENT else None
    user_limited = False
    async for msg in ws:
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            continue
        result = peer.connection.receive(msg.data, now=loop.time())
        if isinstance(result, Refused):
            if result.silent and result.close is None:
                # Answered once already; counted in the connection.
                dropped += 1
                if dropped % YIELD_EVERY_DROPPED == 0:
                    await asyncio.sleep(0)
                continue
            code = result.error.code
            if code in _LIMITS and code not in breached:
                breached.add(code)
                _log.warning("peer over a limit", extra={"peer": peer.name, "code": code})
            hub.traffic.refused(peer.name, result.error, msg.data)
            hub.fanout.send(peer, result.error)
            if result.close is not None:
                await peer.disconnect(result.close, result.error.code)
                return
            continue
        assert isinstance(result, Received)
        if user is not None and not hub.user_rates.take(user, loop.time()):
            message = result.message
            if isinstance(message, Command):
                # Never left unanswered: the asker must know it did not run.
                hub.commands.refuse(peer, message, ErrorCode.RATE_LIMITED, hub.user_rates.message())
            elif not user_limited:  # told once; then dropped until the rate falls
                error = Error(code=ErrorCode.RATE_LIMITED, message=hub.user_rates.message())
                hub.traffic.refused(peer.name, error, msg.data)
                hub.fanout.send(peer, error)
            else:
                dropped += 1
                if dropped % YIELD_EVERY_DROPPED == 0:
                    await asyncio.sleep(0)
            if not user_limited:
                user_limited = True
                _log.warning("user over a limit", extra={"peer": peer.name, "user": user})
            continue
        user_limited = False
        ctx = Context(hub=hub, peer=peer, frame=_frame(msg.data))
        try:
            await hub.handlers.dispatch(ctx, result.message)
        except Exception:
            _log.exception("handler failed", extra={"peer": peer.name})
            request_id = _request_id(result.message)
            if request_id is not None and peer.kind is PeerKind.CLIENT:
                peer.connection.complete_command(request_id)
            hub.fanout.send(
                peer,
                Error(
                    code=ErrorCode.INTERNAL_ERROR,
                    message="the hub failed to handle this; its log says why",
                    id=request_id,
                ),
            )
        if peer.kind is PeerKind.AGENT:
            # Not reading is the backpressure: the agent keeps what is unacknowledged.
            await hub.store.wait_for_room()


def _request_id(message: object) -> str | None:
    request_id = getattr(message, "id", None)
    return request_id if isinstance(request_id, str) else None


async def _refuse(ws: web.WebSocketResponse, error: Error, close: CloseCode) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_frame(encode(error), WSMsgType.TEXT)
        await _close_frame(ws, close, error)


async def _close_frame(ws: web.WebSocketResponse, close: CloseCode, error: Error) -> None:
    await ws.close(code=close, message=error.code.encode())


def _frame(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data
