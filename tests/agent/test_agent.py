"""The agent against a real hub and simulated instruments on ptys, in one event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from kleinmaelzung.agent import Agent, AgentConfig, InstrumentConfig
from kleinmaelzung.hub import HubConfig, RunningHub, start_hub
from kleinmaelzung.protocol import Limits, Timeouts
from kleinmaelzung.sim import Simulator

from ..hub.peers import raw_client

DEADLINE_S = 10.0


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(["kiln-air", "balance"], seed=5) as simulator:
        yield simulator


def link(tmp_path: Path, name: str, target: str) -> str:
    """A stable path to a pty, as udev's /dev/serial/by-id links are to /dev/ttyUSB*."""
    path = tmp_path / name
    temporary = tmp_path / (name + ".new")
    os.symlink(target, temporary)
    os.replace(temporary, path)
    return str(path)


def config(hub_url: str, kiln: str, balance: str, poll_s: float = 0.05) -> AgentConfig:
    return AgentConfig(
        hub=hub_url,
        agent_id="test-pi",
        instruments=[
            InstrumentConfig(
                id="kiln-air",
                profile="kmz-kiln",
                port=kiln,
                poll_interval_s=poll_s,
                reply_timeout_s=0.3,
            ),
            InstrumentConfig(
                id="balance", profile="mt-sics-balance", port=balance, poll_interval_s=poll_s
            ),
        ],
    )


@pytest.fixture
async def agent_task(
    hub: RunningHub, sim: Simulator, tmp_path: Path
) -> AsyncIterator[tuple[Agent, asyncio.Task[None]]]:
    kiln = link(tmp_path, "kiln", sim.paths["kiln-air"])
    agent = Agent(
        config(hub.url, kiln, sim.paths["balance"]),
        timeouts=Timeouts(reconnect_max_s=0.5),
    )
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.link.connected.wait(), DEADLINE_S)
    yield agent, task
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_samples_arrive_in_order_and_commands_never_interleave_with_polls(
    hub: RunningHub, agent_task: tuple[Agent, asyncio.Task[None]]
) -> None:
    async with raw_client(hub.url) as client:
        await client.send({"type": "subscribe", "id": "s", "patterns": ["kiln-air"]})
        await client.receive_type("subscribed")
        # 20 commands while the same port is polled every 50 ms: every reply must parse.
        for i in range(20):
            await client.send(
                {
                    "type": "command",
                    "id": f"c{i}",
                    "instrument": "kiln-air",
                    "name": "set_setpoint",
                    "args": {"value": 60 + i},
                }
            )
        replies = {}
        seqs: list[int] = []
        while len(replies) < 20 or len(seqs) < 20:
            message = await client.receive(timeout=DEADLINE_S)
            if message["type"] == "reply":
                replies[message["id"]] = message
            elif message["type"] == "data":
                seqs += [s["seq"] for s in message["samples"]]
        assert all(r["ok"] for r in replies.values()), replies
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_command_errors_from_the_agent(
    hub: RunningHub, agent_task: tuple[Agent, asyncio.Task[None]], sim: Simulator
) -> None:
    async with raw_client(hub.url) as client:
        cases = [
            ({"name": "set_setpoint", "args": {"value": "hot"}}, "invalid_arguments", "'value'"),
            ({"name": "set_setpoint", "args": {}}, "invalid_arguments", "needs argument 'value'"),
            (
                {"name": "set_setpoint", "args": {"value": 1, "ramp": 2}},
                "invalid_arguments",
                "unexpected: ramp",
            ),
            ({"name": "get_setpoint", "args": {}, "timeout_s": 0.2}, "command_timeout", ""),
        ]
        for index, (fields, code, detail) in enumerate(cases):
            if code == "command_timeout":
                sim.set_silent("kiln-air", True)
            await client.send(
                {"type": "command", "id": str(index), "instrument": "kiln-air", **fields}
            )
            reply = await client.receive_type("reply")
            assert (reply["ok"], reply["error"]["code"]) == (False, code), reply
            assert detail in reply["error"]["message"]
        sim.set_silent("kiln-air", False)


async def test_vanished_port_is_faulted_then_reopened(
    hub: RunningHub, agent_task: tuple[Agent, asyncio.Task[None]], sim: Simulator, tmp_path: Path
) -> None:
    async with raw_client(hub.url) as client:
        await client.send({"type": "subscribe", "id": "s", "patterns": ["kiln-air"]})
        await client.receive_type("subscribed")
        sim.unplug("kiln-air")
        while True:
            status = await client.receive_type("status", timeout=DEADLINE_S)
            if status["state"] == "faulted":
                break
        assert "kiln" in status["reason"]
        link(tmp_path, "kiln", sim.replug("kiln-air"))  # the adapter comes back
        while True:
            status = await client.receive_type("status", timeout=DEADLINE_S)
            if status["state"] == "online":
                break
        data = await client.receive_type("data", timeout=DEADLINE_S)
        assert data["samples"][0]["instrument"] == "kiln-air"


async def test_hub_restart_loses_nothing(sim: Simulator, tmp_path: Path) -> None:
    hub_config = HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "hub")
    hub = await start_hub(hub_config)
    port = int(hub.url.rsplit(":", 1)[1])
    agent = Agent(
        config(hub.url, sim.paths["kiln-air"], sim.paths["balance"], poll_s=0.02),
        limits=Limits(),
        timeouts=Timeouts(reconnect_max_s=0.3),
    )
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.link.connected.wait(), DEADLINE_S)
        await asyncio.wait_for(_until(lambda: agent.runners["kiln-air"]._seq > 10), DEADLINE_S)
        await hub.stop()
        # While the hub is away the agent keeps measuring into its outbox.
        gone_at = agent.runners["kiln-air"]._seq
        await asyncio.wait_for(
            _until(lambda: agent.runners["kiln-air"]._seq > gone_at + 10), DEADLINE_S
        )
        hub = await start_hub(msgspec.structs.replace(hub_config, port=port))
        await asyncio.wait_for(_until(lambda: agent.link.sessions >= 2), DEADLINE_S)
        target = agent.runners["kiln-air"]._seq + 5
        await asyncio.wait_for(
            _until(lambda: agent.runners["kiln-air"]._seq > target and len(agent.outbox) < 5),
            DEADLINE_S,
        )
        await hub.hub.store.flush()
        entries = await hub.hub.store.query(instrument="kiln-air", limit=100_000)
        seqs = sorted(
            s["seq"]
            for e in entries
            if e.direction == "in" and e.type == "data"
            for s in msgspec.json.decode(e.message)["samples"]
        )
        assert seqs[0] == 0
        assert seqs == list(range(len(seqs))), "a sample was lost or logged twice"
        assert seqs[-1] >= target
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hub.stop()


async def _until(condition: object) -> None:
    """Re-check a condition on the agent's counters; callers bound it with wait_for."""
    while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - no event exists for it
        await asyncio.sleep(0.01)
