"""Timelines read from the log: each change of state with its cause, in a hub on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from kleinmaelzung.hub import HubConfig, RunningHub, start_hub
from kleinmaelzung.hub.timeline import cause_of

from .data_lab import Clock
from .peers import data, instrument, raw_agent, raw_client


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[RunningHub, Clock]]:
    clock = Clock()
    clock.now = 100.0
    running = await start_hub(
        HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "data"), clock=clock
    )
    try:
        yield running, clock
    finally:
        await running.stop()


async def timeline(running: RunningHub, path: str) -> list[tuple[float, str, str]]:
    await running.hub.store.flush()
    async with aiohttp.ClientSession() as http, http.get(running.url + path) as response:
        assert response.status == 200, await response.text()
        found = await response.json()
    return [(c["ts"], c["state"], c["cause"]) for c in found["changes"]]


async def test_each_change_has_its_cause_and_a_lost_agent_is_noticed(
    hub: tuple[RunningHub, Clock],
) -> None:
    running, clock = hub
    kiln = instrument("kiln-air")
    async with raw_agent(running.url, "pi-1", [kiln]) as agent:
        seqs = iter(range(100))

        async def handled() -> None:
            # Frames of a connection are handled in order: once this one's
            # ack is back, so is everything sent before it.
            await agent.send(data("kiln-air", next(seqs)))
            await agent.receive_type("ack")

        clock.now = 110.0
        status = {"type": "status", "instrument": "kiln-air", "ts": 110.0}
        await agent.send(status | {"state": "faulted", "reason": "no answer within 1 s"})
        await handled()
        clock.now = 120.0
        await agent.send(status | {"state": "online", "ts": 120.0})
        await handled()
        async with raw_client(running.url) as client:
            await client.send({"type": "subscribe", "id": "1", "patterns": ["kiln-air"]})
            await client.receive_type("subscribed")
            clock.now = 130.0
            await agent.send({"type": "bye"})  # not a message it knows: the agent goes
            await agent.ws.close()
            await client.receive_type("status")
    # Back, then gone with nobody subscribed (logged all the same), then back again.
    clock.now = 140.0
    async with raw_agent(running.url, "pi-1", [kiln], run="r2") as agent:
        clock.now = 155.0
        await agent.send(data("kiln-air", 0))
        await agent.receive_type("ack")
    clock.now = 160.0
    async with raw_agent(running.url, "pi-1", [kiln], run="r3"):
        assert await timeline(running, "/api/timeline/kiln-air") == [
            (100.0, "online", "agent connected"),
            (110.0, "faulted", "reply timeout"),
            (120.0, "online", "recovered"),
            (130.0, "offline", "agent disconnected"),
            (140.0, "online", "agent connected"),
            (155.0, "offline", "agent disconnected"),
            (160.0, "online", "agent connected"),
        ]
        # From 125 on: the state then, and what followed until 150.
        assert await timeline(running, "/api/timeline/kiln-air?since=125&until=150") == [
            (120.0, "online", "recovered"),
            (130.0, "offline", "agent disconnected"),
            (140.0, "online", "agent connected"),
        ]
        agent_view = await timeline(running, "/api/timeline?agent=pi-1")
        assert [cause for _, _, cause in agent_view] == [
            "agent connected",
            "agent disconnected",
            "agent connected",
            "agent disconnected",
            "agent connected",
        ]


@pytest.mark.parametrize(
    ("state", "reason", "cause"),
    [
        ("faulted", "could not open port /dev/ttyUSB0: [Errno 2] No such file", "port vanished"),
        ("faulted", "[Errno 5] Input/output error", "port vanished"),
        ("faulted", "no answer within 0.5 s", "reply timeout"),
        ("faulted", "read timed out", "reply timeout"),
        ("faulted", "driver error: ValueError: bad line '?'", "instrument fault"),
        ("online", "", "recovered"),
    ],
)
def test_an_agents_reason_gets_a_cause(state: str, reason: str, cause: str) -> None:
    assert cause_of(state, reason) == cause  # type: ignore[arg-type]
