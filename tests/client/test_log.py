"""Reading the hub's traffic log over its HTTP API."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable

import msgspec
import pytest

from kleinmaelzung.client import Client, HubUnreachable, LogEntry, RequestError, fetch_log
from kleinmaelzung.hub import RunningHub

from ..test_cli import kmz_async
from .agent_peer import instrument, publish, raw_agent, raw_client


async def logged_soon(
    url: str, condition: Callable[[list[LogEntry]], bool], deadline_s: float = 5.0
) -> list[LogEntry]:
    """The newest 50 entries, once they satisfy `condition` (polled until a deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not condition(entries := await fetch_log(url, limit=50)):
        if loop.time() > deadline:
            raise AssertionError(f"log never satisfied the condition: {entries}")
        await asyncio.sleep(0.02)
    return entries


async def test_log_entries_newest_first_and_by_instrument(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi", [instrument("balance"), instrument("kiln-air")]) as agent,
        Client(hub.url, name="reader") as client,
    ):
        await publish(agent, "kiln-air", 0)
        await publish(agent, "balance", 0)
        await client.instruments()
    expected = {"agent_hello", "client_hello", "data", "list_instruments"}
    # The hub commits its log in batches, from a writer thread.
    entries = await logged_soon(
        hub.url,
        lambda es: expected <= {e.type for e in es} and sum(e.type == "data" for e in es) >= 2,
    )
    assert [e.id for e in entries] == sorted((e.id for e in entries), reverse=True)
    balance = await fetch_log(hub.url, instrument="balance", limit=50)
    data = [e for e in balance if e.type == "data"]
    assert data and all(e.instrument == "balance" for e in data)
    assert data[0].direction == "in" and data[0].peer == "pi"
    assert data[0].message_object()["samples"][0]["instrument"] == "balance"
    assert len(await fetch_log(hub.url, limit=1)) == 1


async def test_a_refused_query_raises_with_the_code(hub: RunningHub) -> None:
    with pytest.raises(RequestError) as info:
        await fetch_log(hub.url, limit=0)
    assert info.value.code == "invalid_arguments"


async def test_unreachable_hub() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(HubUnreachable, match=f"127.0.0.1:{port}/api/log"):
        await fetch_log(f"http://127.0.0.1:{port}")


async def test_a_refused_frame_leaves_the_log_readable(hub: RunningHub) -> None:
    """Defect 2: one refused frame made fetch_log and `kmz log` fail for everyone."""
    typo = {
        "type": "command",
        "id": "c1",
        "instrument": "kiln-air",
        "name": "set-setpoint",  # a typo: names take underscores
        "args": {"value": 80},
    }
    async with raw_client(hub.url, name="typist") as client:
        await client.send(typo)
        assert (await client.receive_type("error"))["code"] == "invalid_message"

    def refused_is_logged(entries: list[LogEntry]) -> bool:
        return any(
            e.peer.endswith("/typist") and b"set-setpoint" in bytes(e.message) for e in entries
        )

    entries = await logged_soon(hub.url, refused_is_logged)
    (refused,) = [e for e in entries if e.direction == "in" and b"set-setpoint" in bytes(e.message)]
    assert refused.peer.endswith("/typist")  # the hub numbers its clients
    msgspec.json.decode(refused.message)  # whatever its kind, still valid JSON
    # The command line reads the same page: as JSON and as lines for people.
    as_json = await kmz_async("log", "--json", "--limit", "50", "--hub", hub.url)
    assert as_json.returncode == 0, as_json.stderr
    assert any("set-setpoint" in json.dumps(e["message"]) for e in json.loads(as_json.stdout))
    as_lines = await kmz_async("log", "--limit", "50", "--hub", hub.url)
    assert as_lines.returncode == 0, as_lines.stderr
    assert any("typist" in line and "set-setpoint" in line for line in as_lines.stdout.splitlines())
