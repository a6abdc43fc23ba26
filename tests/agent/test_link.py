"""The agent's hub link: reconnecting, saying what is wrong, and stopping when replaced.

Issue 7, defects 11, 12 and 5: against a real hub, and against servers on
127.0.0.1 that misbehave on purpose (accept TCP and never answer, answer 404,
refuse the token, refuse the hello with 4003, close right after the welcome).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web

from kleinmaelzung.agent import Spool
from kleinmaelzung.agent.link import AgentReplaced, Link
from kleinmaelzung.agent.permit import Permit
from kleinmaelzung.hub import HubConfig, RunningHub, start_hub
from kleinmaelzung.protocol import Command, InstrumentInfo, Reply, Timeouts

DEADLINE_S = 10.0
WELCOME = {"type": "welcome", "protocol": 3, "hub": "h", "session": "s", "server_time": 0.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def execute(command: Command, permit: Permit) -> Reply:
    return Reply(id=command.id, ok=True)


def make_link(hub: str, agent_id: str = "pi-1", **timeouts: float) -> Link:
    return Link(
        hub=hub,
        agent_id=agent_id,
        token=None,
        run="r1",
        instruments=[InstrumentInfo(id=f"{agent_id}-thermo", kind="thermometer")],
        spool=Spool(None, run="r.0"),
        statuses=list,
        execute=execute,
        timeouts=Timeouts(**timeouts),
    )


@contextmanager
def running(link: Link) -> Iterator[asyncio.Task[None]]:
    task = asyncio.create_task(link.run())
    try:
        yield task
    finally:
        task.cancel()


async def until(condition: Callable[[], object], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Wait for `condition` to hold, checking each 10 ms, at most `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {deadline_s:g} s")
        await asyncio.sleep(0.01)


def records(caplog: pytest.LogCaptureFixture, level: int, pattern: str) -> list[logging.LogRecord]:
    """Records at exactly `level` whose message or fields match `pattern`."""
    found = re.compile(pattern)
    return [
        r
        for r in caplog.records
        if r.levelno == level
        and found.search(r.getMessage() + " " + " ".join(map(str, vars(r).values())))
    ]


@asynccontextmanager
async def web_server(
    agent_endpoint: Callable[[web.Request], Awaitable[web.StreamResponse]] | None,
) -> AsyncIterator[tuple[str, list[float]]]:
    """A server on 127.0.0.1, `agent_endpoint` at /ws/agent (or 404); yields URL, request times."""
    requests: list[float] = []

    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        requests.append(time.monotonic())
        return await handler(request)

    app = web.Application(middlewares=[count])
    if agent_endpoint is not None:
        app.router.add_get("/ws/agent", agent_endpoint)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", requests
    finally:
        await runner.cleanup()


def answering(
    answer: Callable[[web.WebSocketResponse], Awaitable[None]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An /ws/agent endpoint that reads the hello and then runs `answer`."""

    async def endpoint(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        hello = await ws.receive()
        assert hello.type in (WSMsgType.TEXT, WSMsgType.BINARY)
        assert b'"agent_hello"' in (
            hello.data if isinstance(hello.data, bytes) else hello.data.encode()
        )
        await answer(ws)
        return ws

    return endpoint


# --- defect 12: reconnecting --------------------------------------------------------


async def test_backoff_resets_once_a_hello_is_welcomed() -> None:
    # A hub that restarts again and again, each time welcoming the agent
    # first: every welcome must reset the backoff, or the waits grow to 30 s.
    async def welcome_then_go_away(ws: web.WebSocketResponse) -> None:
        await ws.send_json(WELCOME)
        await ws.close(code=1001)

    async with web_server(answering(welcome_then_go_away)) as (url, _):
        link = make_link(url)
        with running(link):
            # With the backoff reset, each return takes about 0.2 s; without,
            # the 8th waits about 13 s in all.
            await until(lambda: link.sessions >= 8, "eight welcomed sessions", 6.0)


async def test_a_hub_that_accepts_but_never_answers_is_given_up_on_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # TCP is accepted; not one byte comes back

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with running(make_link(f"http://127.0.0.1:{port}", handshake_s=0.3)):
            await until(lambda: len(accepted) >= 2, "a second attempt after a bounded first one")
            warned = records(caplog, logging.WARNING, "hub unreachable")
            assert len(warned) == 1
            reason = str(warned[0].reason)  # type: ignore[attr-defined]
            assert f"ws://127.0.0.1:{port}/ws/agent" in reason
            assert "no answer" in reason and "within 0.3 s" in reason
    finally:
        for writer in accepted:
            writer.close()
        server.close()


async def test_a_refused_connection_warns_once_then_says_when_it_is_back(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    link = make_link(f"http://127.0.0.1:{port}", reconnect_max_s=0.2)
    with running(link):
        await until(
            lambda: len(records(caplog, logging.DEBUG, "hub still unreachable")) >= 3,
            "three quiet retries",
        )
        warned = records(caplog, logging.WARNING, "hub unreachable")
        assert len(warned) == 1
        assert "connection refused" in str(warned[0].reason)  # type: ignore[attr-defined]
        assert not records(caplog, logging.ERROR, ".")
        config = HubConfig(host="127.0.0.1", port=port, data_dir=tmp_path / "hub")
        hub = await start_hub(config)
        try:
            await asyncio.wait_for(link.connected.wait(), DEADLINE_S)
            assert records(caplog, logging.INFO, r"^connected after \d+\.\d s")
            await hub.stop()
            await until(
                lambda: records(caplog, logging.WARNING, "connection to the hub lost"), "loss"
            )
            hub = await start_hub(config)
            await until(lambda: link.sessions >= 2, "reconnecting to the restarted hub")
            assert records(caplog, logging.INFO, r"^reconnected after \d+\.\d s")
        finally:
            await hub.stop()


# --- defect 11: what cannot heal by itself ------------------------------------------------


async def test_a_wrong_path_is_an_error_said_once_and_retried_at_the_slowest_pace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with web_server(None) as (url, requests):
        with running(make_link(url + "/kmz", reconnect_max_s=0.4)):
            await until(lambda: len(requests) >= 3, "three attempts")
    errors = records(caplog, logging.ERROR, "cannot connect to the hub")
    assert len(errors) == 1, "said once, not at every attempt"
    reason = str(errors[0].reason)  # type: ignore[attr-defined]
    assert f"{url.replace('http', 'ws')}/kmz/ws/agent" in reason
    assert "HTTP 404" in reason and "path is wrong" in reason
    assert not records(caplog, logging.WARNING, "unreachable")
    gaps = [b - a for a, b in itertools.pairwise(requests)]
    assert min(gaps) >= 0.19, f"retried at the transient pace: {gaps}"


async def test_refused_credentials_are_an_error_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def refuse(ws: web.WebSocketResponse) -> None:
        await ws.send_json({"type": "error", "code": "unauthorized", "message": "bad token"})
        await ws.close(code=4001, message=b"unauthorized")

    async with web_server(answering(refuse)) as (url, requests):
        with running(make_link(url, reconnect_max_s=0.4)):
            await until(lambda: len(requests) >= 3, "three attempts")
    errors = records(caplog, logging.ERROR, "cannot connect to the hub")
    assert len(errors) == 1
    reason = str(errors[0].reason)  # type: ignore[attr-defined]
    assert "unauthorized: bad token" in reason and "check the token" in reason


# --- defect 5 (the agent's side): replaced, or refused as a duplicate -----------------------


async def test_a_replaced_agent_says_so_and_stops(
    hub: RunningHub, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = make_link(hub.url, "pi-1"), make_link(hub.url, "pi-1")
    with running(first) as first_task:
        await asyncio.wait_for(first.connected.wait(), DEADLINE_S)
        with running(second):
            await asyncio.wait_for(second.connected.wait(), DEADLINE_S)
            with pytest.raises(AgentReplaced) as info:
                await asyncio.wait_for(first_task, DEADLINE_S)
            assert second.connected.is_set() and second.sessions == 1
    assert info.value.agent_id == "pi-1" and info.value.close_code == 4003
    errors = records(caplog, logging.ERROR, "replaced")
    assert len(errors) == 1
    assert errors[0].agent == "pi-1"  # type: ignore[attr-defined]
    assert "4003" in str(errors[0].reason)  # type: ignore[attr-defined]


async def test_a_hello_refused_with_4003_stops_the_link(caplog: pytest.LogCaptureFixture) -> None:
    async def refuse(ws: web.WebSocketResponse) -> None:
        error = {"type": "error", "code": "duplicate_id", "message": "pi-1 is connected"}
        await ws.send_json(error)
        await ws.close(code=4003, message=b"duplicate_id")

    async with web_server(answering(refuse)) as (url, requests):
        with (
            running(make_link(url)) as task,
            pytest.raises(AgentReplaced, match="pi-1 is connected"),
        ):
            await asyncio.wait_for(task, DEADLINE_S)
    assert len(requests) == 1, "never retried"
    assert records(caplog, logging.ERROR, "pi-1 is connected")
