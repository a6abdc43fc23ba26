"""The client's connection: handshake, refusals, an unreachable hub, losing and regaining it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

import kleinmaelzung.client.aio as aio
from kleinmaelzung.client import (
    Client,
    CommandError,
    ConnectionLost,
    HandshakeError,
    HubUnreachable,
    Sample,
)
from kleinmaelzung.hub import HubConfig, RunningHub, start_hub
from kleinmaelzung.protocol import Timeouts

from .agent_peer import instrument, publish_until, raw_agent

DEADLINE_S = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def websocket_server(
    answer: Callable[[web.WebSocketResponse], Awaitable[object]],
) -> AsyncIterator[str]:
    """A server on 127.0.0.1 whose /ws/client runs `answer`; yields its URL."""

    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await answer(ws)
        return ws

    app = web.Application()
    app.router.add_get("/ws/client", endpoint)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_unreachable_hub_fails_fast_with_the_url() -> None:
    port = free_port()
    with pytest.raises(HubUnreachable, match=f"127.0.0.1:{port}/ws/client"):
        await asyncio.wait_for(Client(f"http://127.0.0.1:{port}").connect(), DEADLINE_S)


async def test_a_server_that_is_not_a_hub_is_unreachable() -> None:
    async with websocket_server(lambda ws: ws.close()) as url:
        with pytest.raises(HubUnreachable, match="/ws/client"):
            await Client(url.replace("http://", "ws://") + "/nowhere").connect()


async def test_refused_handshake_raises(hub: RunningHub, monkeypatch: pytest.MonkeyPatch) -> None:
    # A client from the future: the real hub refuses its protocol version.
    monkeypatch.setattr(aio, "PROTOCOL_VERSION", 99)
    with pytest.raises(HandshakeError) as info:
        await Client(hub.url).connect()
    assert info.value.code == "unsupported_protocol"


async def test_a_refused_token_raises_unauthorized() -> None:
    async def refuse(ws: web.WebSocketResponse) -> None:
        hello = await ws.receive_json()
        assert (hello["type"], hello["token"], hello["name"]) == ("client_hello", "wrong", "me")
        await ws.send_json({"type": "error", "code": "unauthorized", "message": "bad token"})
        await ws.close(code=4001)

    async with websocket_server(refuse) as url:
        with pytest.raises(HandshakeError) as info:
            await Client(url, name="me", token="wrong").connect()
    assert (info.value.code, info.value.message) == ("unauthorized", "bad token")


async def test_a_hub_that_never_welcomes_times_out() -> None:
    async def stay_silent(ws: web.WebSocketResponse) -> None:
        await ws.receive()  # the hello, then nothing
        await ws.receive()  # until the client gives up and closes

    async with websocket_server(stay_silent) as url:
        client = Client(url, timeouts=Timeouts(handshake_s=0.3))
        with pytest.raises(HandshakeError, match="no welcome"):
            await asyncio.wait_for(client.connect(), DEADLINE_S)


async def test_hub_going_away_fails_requests_and_ends_subscriptions(tmp_path: Path) -> None:
    running = await start_hub(HubConfig(port=0, data_dir=tmp_path / "h"))
    async with (
        raw_agent(running.url, "pi", [instrument("balance", ("wait",))]) as agent,
        Client(running.url) as client,
    ):
        subscription = await client.subscribe("*")
        command = asyncio.create_task(client.command("balance", "wait", timeout_s=60))
        await agent.receive_type("command")  # in flight, and the agent never answers
        await running.stop()
        # The command had left: it may have run, so it has not "failed".
        with pytest.raises(CommandError, match="lost") as info:
            await asyncio.wait_for(command, DEADLINE_S)
        assert info.value.code == "outcome_unknown"
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(anext(subscription), DEADLINE_S)


async def test_reconnect_subscribes_again_after_a_hub_restart(tmp_path: Path) -> None:
    port = free_port()
    config = HubConfig(port=port, data_dir=tmp_path / "h")
    running = await start_hub(config)
    async with Client(running.url, reconnect=True) as client:
        subscription = await client.subscribe("balance")
        await running.stop()
        running = await start_hub(config)
        try:
            async with raw_agent(running.url, "pi", [instrument("balance")]) as agent:
                next_sample = asyncio.ensure_future(anext(subscription))
                await publish_until(agent, "balance", next_sample)
                assert isinstance(next_sample.result(), Sample)
        finally:
            await running.stop()
