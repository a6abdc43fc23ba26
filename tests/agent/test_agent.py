"""The agent against a real hub and simulated instruments on ptys, in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from kleinmaelzung.agent import Agent, AgentConfig, AgentError, InstrumentConfig
from kleinmaelzung.agent import link as link_module
from kleinmaelzung.agent.config import SpoolConfig
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
            # Longer than a poll of the silent kiln holds its port (0.3 s), so
            # it starts, and then gets no answer.
            ({"name": "get_setpoint", "args": {}, "timeout_s": 1.0}, "command_timeout", ""),
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
        back_at = time.time()
        hub = await start_hub(msgspec.structs.replace(hub_config, port=port))
        await asyncio.wait_for(_until(lambda: agent.link.sessions >= 2), DEADLINE_S)
        target = agent.runners["kiln-air"]._seq + 5
        # Drained: nothing from before the hub came back is unacknowledged.
        # (Not a small depth: at 100 samples/s, the depth between two Acks
        # is what half a second of them and a commit interval hold.)
        await asyncio.wait_for(
            _until(
                lambda: (
                    agent.runners["kiln-air"]._seq > target
                    and (agent.spool.oldest is None or agent.spool.oldest > back_at)
                )
            ),
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


def open_fds(path: str) -> int:
    """How many of this process's file descriptors are open on the tty behind `path`."""
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == target
    return count


async def logged_seqs(hub: RunningHub, instrument: str) -> list[int]:
    """The seqs of `instrument`'s samples in the hub's traffic log, sorted."""
    await hub.hub.store.flush()
    entries = await hub.hub.store.query(instrument=instrument, limit=100_000)
    return sorted(
        s["seq"]
        for e in entries
        if e.direction == "in" and e.type == "data"
        for s in msgspec.json.decode(e.message)["samples"]
        if s["instrument"] == instrument
    )


async def test_stopping_delivers_what_is_pending_then_closes_the_ports(
    hub: RunningHub, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    paths = sim.paths
    before = {i: open_fds(p) for i, p in paths.items()}
    agent = Agent(config(hub.url, paths["kiln-air"], paths["balance"], poll_s=0.01))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.wait_for(agent.link.connected.wait(), DEADLINE_S)
    await asyncio.wait_for(_until(lambda: agent.runners["kiln-air"]._seq > 20), DEADLINE_S)
    assert {i: open_fds(p) for i, p in paths.items()} == {i: n + 1 for i, n in before.items()}
    stop.set()
    await asyncio.wait_for(task, DEADLINE_S)
    # Every sample taken reached the hub's log: a stop loses nothing the hub could take.
    made = agent.runners["kiln-air"]._seq
    assert await logged_seqs(hub, "kiln-air") == list(range(made))
    assert agent.spool.depth == 0
    assert "unacknowledged" not in caplog.text
    assert {i: open_fds(p) for i, p in paths.items()} == before


async def logged_runs(hub: RunningHub, instrument: str) -> dict[str, list[int]]:
    """The seqs of `instrument`'s logged samples by agent process run (the run before its '.')."""
    await hub.hub.store.flush()
    entries = await hub.hub.store.query(instrument=instrument, limit=100_000)
    runs: dict[str, list[int]] = {}
    for entry in entries:
        if entry.direction == "in" and entry.type == "data":
            data = msgspec.json.decode(entry.message)
            process = data["run"].split(".")[0]
            runs.setdefault(process, []).extend(
                s["seq"] for s in data["samples"] if s["instrument"] == instrument
            )
    return {run: sorted(seqs) for run, seqs in runs.items()}


async def test_samples_taken_while_the_hub_is_away_survive_an_agent_restart(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 9: the outbox was memory only; an agent restarted during a hub
    # outage lost every sample it had queued, and said "outbox flushed".
    caplog.set_level(logging.INFO, "kleinmaelzung.agent.agent")
    hub_config = HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "hub")
    hub = await start_hub(hub_config)
    port = int(hub.url.rsplit(":", 1)[1])
    first = Agent(
        config(hub.url, sim.paths["kiln-air"], sim.paths["balance"]),
        timeouts=Timeouts(reconnect_max_s=0.3),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    try:
        await asyncio.wait_for(first.link.connected.wait(), DEADLINE_S)
    finally:
        await hub.stop()
    gone_at = first.runners["kiln-air"]._seq
    await asyncio.wait_for(_until(lambda: first.runners["kiln-air"]._seq > gone_at + 5), DEADLINE_S)
    stop.set()
    # No hub to deliver to: no waiting for one.
    await asyncio.wait_for(task, 1.5)
    taken = first.runners["kiln-air"]._seq
    [kept] = [r for r in caplog.records if "kept in the spool" in r.getMessage()]
    assert kept.count == first.spool.depth > 0  # type: ignore[attr-defined]

    hub = await start_hub(msgspec.structs.replace(hub_config, port=port))
    second = Agent(config(hub.url, sim.paths["kiln-air"], sim.paths["balance"]))
    stop = asyncio.Event()
    task = asyncio.create_task(second.run(stop))
    try:
        await asyncio.wait_for(second.link.connected.wait(), DEADLINE_S)
        expected = list(range(taken))
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while (logged := (await logged_runs(hub, "kiln-air")).get(first.link._run)) != expected:
            assert logged is None or logged == expected[: len(logged)], "lost or logged twice"
            assert asyncio.get_running_loop().time() < deadline, f"logged only {logged}"
            await asyncio.sleep(0.05)  # the log has no event for "this is logged"
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)
        await hub.stop()


class LinkGaveUp(AgentError):
    """Stands for the link's permanent errors (another agent took our id, close 4003)."""


async def test_a_link_that_gives_up_ends_the_agent_with_its_error_and_closes_the_ports(
    hub: RunningHub, sim: Simulator
) -> None:
    paths = sim.paths
    before = {i: open_fds(p) for i, p in paths.items()}
    agent = Agent(config(hub.url, paths["kiln-air"], paths["balance"]))
    give_up = asyncio.Event()
    serve = agent.link.run

    async def serve_then_give_up() -> None:
        # The real link until told to give up, as it will when the hub says
        # another agent took this id.
        serving = asyncio.create_task(serve())
        await give_up.wait()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        raise LinkGaveUp("another agent connected as test-pi")

    agent.link.run = serve_then_give_up  # type: ignore[method-assign]
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.link.connected.wait(), DEADLINE_S)
    await asyncio.wait_for(_until(lambda: agent.runners["balance"]._seq > 2), DEADLINE_S)
    give_up.set()
    with pytest.raises(LinkGaveUp, match="another agent"):
        await asyncio.wait_for(task, 1.5)  # promptly, not after a poll or a backoff
    assert {i: open_fds(p) for i, p in paths.items()} == before


@pytest.mark.skipif(
    not hasattr(link_module, "AgentReplaced"), reason="the link does not stop on close 4003 yet"
)
async def test_an_agent_replaced_by_another_with_its_id_stops(
    hub: RunningHub, sim: Simulator, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    kiln, balance = sim.paths["kiln-air"], sim.paths["balance"]
    before = open_fds(kiln)
    first = Agent(config(hub.url, kiln, balance))
    first_task = asyncio.create_task(first.run())
    await asyncio.wait_for(first.link.connected.wait(), DEADLINE_S)
    second = Agent(
        AgentConfig(
            hub=hub.url,
            agent_id="test-pi",
            instruments=[InstrumentConfig(id="balance-2", profile="mt-sics-balance", port=balance)],
            # Another Pi: its own spool (one spool is locked by one agent).
            spool=SpoolConfig(path=str(tmp_path / "other-pi.spool")),
        )
    )
    second_task = asyncio.create_task(second.run())
    try:
        with pytest.raises(link_module.AgentReplaced):
            await asyncio.wait_for(first_task, DEADLINE_S)
        assert open_fds(kiln) == before
        assert second.link.connected.is_set() and not second_task.done()
    finally:
        for task in (first_task, second_task):
            task.cancel()
        await asyncio.gather(first_task, second_task, return_exceptions=True)
