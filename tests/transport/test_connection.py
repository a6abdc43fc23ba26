"""One connection driver for agent and client: bounded attempts, typed failures, the send queue.

Against a real hub, and against servers on 127.0.0.1 that misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from kleinmaelzung.hub import RunningHub
from kleinmaelzung.protocol import (
    AgentHello,
    ClientHello,
    ErrorCode,
    InstrumentList,
    ListInstruments,
    ProtocolError,
    Status,
    Subscribe,
    Timeouts,
)
from kleinmaelzung.transport import (
    AGENT_PATH,
    CLIENT_PATH,
    ConnectionLost,
    Connector,
    HandshakeFailed,
    Healing,
    HubUnreachable,
    websocket_url,
)

DEADLINE_S = 10.0
CLIENT_HELLO = ClientHello(protocol=3, name="test")
AGENT_HELLO = AgentHello(protocol=3, agent_id="pi-1", instruments=[], run="r1")
WELCOME = {"type": "welcome", "protocol": 3, "hub": "h", "session": "s", "server_time": 0.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def server(
    answer: Callable[[web.WebSocketResponse], Awaitable[None]] | None,
) -> AsyncIterator[str]:
    """A server whose /ws/client reads the hello and runs `answer` (None: 404); yields its URL."""

    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        assert answer is not None
        await answer(ws)
        return ws

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    if answer is not None:
        app.router.add_get("/ws/client", endpoint)
    app.router.add_get("/plain", plain)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def attempt(url: str, hello: Any = CLIENT_HELLO, **timeouts: float) -> BaseException:
    """One bounded connect; return what it raised."""
    async with Connector(url, hello, timeouts=Timeouts(**timeouts)) as connector:
        with pytest.raises(Exception) as info:  # noqa: PT011 - each test checks the type
            await asyncio.wait_for(connector.connect(), DEADLINE_S)
    return info.value


async def test_refused_is_transient_and_says_so() -> None:
    port = free_port()
    failure = await attempt(f"ws://127.0.0.1:{port}/ws/client")
    assert isinstance(failure, HubUnreachable) and failure.healing is Healing.TRANSIENT
    assert "connection refused" in str(failure) and f"127.0.0.1:{port}" in str(failure)


async def test_an_unknown_host_is_transient() -> None:
    # A Pi that boots before its network: DNS mends by itself.
    failure = await attempt("ws://no-such-hub.invalid/ws/client", handshake_s=3.0)
    assert isinstance(failure, HubUnreachable) and failure.healing is Healing.TRANSIENT
    assert "no-such-hub.invalid" in str(failure)


async def test_a_server_that_accepts_but_never_answers_is_bounded() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    silent = await asyncio.start_server(keep, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        failure = await attempt(f"ws://127.0.0.1:{port}/ws/client", handshake_s=0.3)
        assert loop.time() - started < 2.0
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
    assert isinstance(failure, HubUnreachable) and failure.healing is Healing.TRANSIENT
    assert "no answer" in str(failure) and "within 0.3 s" in str(failure)


async def test_a_wrong_path_is_permanent() -> None:
    async with server(None) as url:
        failure = await attempt(websocket_url(url + "/kmz", CLIENT_PATH))
    assert isinstance(failure, HubUnreachable) and failure.healing is Healing.PERMANENT
    assert "HTTP 404" in str(failure) and "path is wrong" in str(failure)


async def test_a_page_that_is_not_a_websocket_is_permanent() -> None:
    async with server(None) as url:
        failure = await attempt(url.replace("http", "ws") + "/plain")
    assert isinstance(failure, HubUnreachable) and failure.healing is Healing.PERMANENT
    assert "not a WebSocket endpoint (HTTP 200" in str(failure)


async def test_refused_credentials_are_permanent_with_the_hubs_words() -> None:
    async def refuse(ws: web.WebSocketResponse) -> None:
        await ws.send_json({"type": "error", "code": "unauthorized", "message": "bad token"})
        await ws.close(code=4001)

    async with server(refuse) as url:
        failure = await attempt(websocket_url(url, CLIENT_PATH))
    assert isinstance(failure, HandshakeFailed) and failure.healing is Healing.PERMANENT
    assert (failure.code, failure.message, failure.close_code) == (
        "unauthorized",
        "bad token",
        4001,
    )
    assert "check the token" in str(failure)


async def test_a_close_with_4003_during_the_handshake_is_final() -> None:
    async def refuse(ws: web.WebSocketResponse) -> None:
        await ws.send_json({"type": "error", "code": "duplicate_id", "message": "taken"})
        await ws.close(code=4003)

    async with server(refuse) as url:
        failure = await attempt(websocket_url(url, CLIENT_PATH))
    assert isinstance(failure, HandshakeFailed) and failure.healing is Healing.FINAL
    assert failure.close_code == 4003


async def test_a_close_without_an_error_is_mapped_by_its_code() -> None:
    async def going_away(ws: web.WebSocketResponse) -> None:
        await ws.close(code=1001, message=b"restarting")

    async def unsupported(ws: web.WebSocketResponse) -> None:
        await ws.close(code=4002)

    async with server(going_away) as url:
        failure = await attempt(websocket_url(url, CLIENT_PATH))
    assert isinstance(failure, ConnectionLost) and failure.healing is Healing.TRANSIENT
    assert "close code 1001" in str(failure) and "restarting" in str(failure)
    async with server(unsupported) as url:
        failure = await attempt(websocket_url(url, CLIENT_PATH))
    assert isinstance(failure, HandshakeFailed) and failure.healing is Healing.PERMANENT
    assert failure.code == ErrorCode.UNSUPPORTED_PROTOCOL


async def test_no_welcome_in_time_is_a_transient_handshake_failure() -> None:
    async def stay_silent(ws: web.WebSocketResponse) -> None:
        await ws.receive()

    async with server(stay_silent) as url:
        failure = await attempt(websocket_url(url, CLIENT_PATH), handshake_s=0.3)
    assert isinstance(failure, HandshakeFailed) and failure.healing is Healing.TRANSIENT
    assert str(failure).startswith("no welcome from the hub at ws://")


async def test_a_welcomed_connection_sends_reads_and_checks_what_goes_out(
    hub: RunningHub,
) -> None:
    url = websocket_url(hub.url, CLIENT_PATH)
    async with Connector(url, CLIENT_HELLO) as connector:
        connection = await connector.connect()
        assert connection.live and connection.welcome.hub == "test-hub"
        await connection.send(ListInstruments(id="1"))
        answer = await asyncio.wait_for(anext(connection), DEADLINE_S)
        assert isinstance(answer, InstrumentList) and answer.id == "1"
        # A client never sends a status: refused here, before the wire.
        with pytest.raises(ProtocolError, match="not a message a client sends"):
            await connection.send(Status(instrument="kiln", state="online", ts=0.0))
        assert connection.send_soon(Subscribe(id="2", patterns=["*"]))
        await connection.close()
        assert not connection.live and connection.lost is None
        with pytest.raises(ConnectionLost):
            await connection.send(ListInstruments(id="3"))
        assert not connection.send_soon(ListInstruments(id="4"))


async def test_the_end_of_a_connection_says_whether_it_can_heal(hub: RunningHub) -> None:
    url = websocket_url(hub.url, AGENT_PATH)
    async with (
        Connector(url, AGENT_HELLO) as first,
        Connector(url, AGENT_HELLO) as second,
    ):
        replaced = await first.connect()
        await second.connect()  # the same agent id: the hub replaces the first
        async with asyncio.timeout(DEADLINE_S):
            async for _ in replaced:
                pass
        assert replaced.lost is not None and replaced.lost.close_code == 4003
        assert replaced.lost.healing is Healing.FINAL
        assert not replaced.live


async def test_reconnect_waits_out_a_hub_that_is_down_and_resets_once_welcomed(
    hub: RunningHub,
) -> None:
    url = websocket_url(hub.url, CLIENT_PATH)
    async with Connector(url, CLIENT_HELLO, timeouts=Timeouts(reconnect_max_s=0.2)) as connector:
        connection = await asyncio.wait_for(connector.reconnect(), DEADLINE_S)
        assert connection.live
        await connection.close()


async def test_several_endpoints_the_next_is_tried_at_once_the_backoff_per_round(
    hub: RunningHub,
) -> None:
    dead = websocket_url(f"http://127.0.0.1:{free_port()}", CLIENT_PATH)
    live = websocket_url(hub.url, CLIENT_PATH)
    async with server(None) as not_a_hub:  # 404: a permanent failure, still not a reason to stop
        wrong = websocket_url(not_a_hub, CLIENT_PATH)
        # A backoff of a minute: a wait anywhere within the round would show.
        timeouts = Timeouts(reconnect_max_s=60.0)
        async with Connector([dead, wrong, live], CLIENT_HELLO, timeouts=timeouts) as connector:
            assert connector.url == dead
            connection = await asyncio.wait_for(connector.reconnect(), DEADLINE_S)
            assert connection.live and connector.url == live
            await connection.close()
        # Every endpoint failing: a round, then the backoff before the next.
        async with Connector([dead, wrong], CLIENT_HELLO, timeouts=timeouts) as connector:
            trying = asyncio.create_task(connector.reconnect())
            done, _ = await asyncio.wait({trying}, timeout=1.0)
            assert not done and connector.url == dead  # back at the first, waiting
            trying.cancel()
    with pytest.raises(ValueError, match="at least one URL"):
        Connector([], CLIENT_HELLO)
