"""Keyed commands run at most once at the instrument, across retries, restarts and races."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from kleinmaelzung.agent import Agent, AgentConfig, InstrumentConfig
from kleinmaelzung.agent.ledger import CommandLedger
from kleinmaelzung.client import Client, CommandError, ConnectionLost
from kleinmaelzung.hub import RunningHub
from kleinmaelzung.protocol import Command, ErrorCode, ErrorInfo, Reply, Timeouts
from kleinmaelzung.sim import Simulator

from ..e2e.fault_proxy import FaultProxy

DEADLINE_S = 10.0


def command(key: str = "k1", value: float = 80.0, id: str = "c1") -> Command:
    return Command(
        id=id, instrument="kiln-air", name="set_setpoint", args={"value": value}, key=key
    )


class Instrument:
    """Counts how often a command reaches it; may hold one until released."""

    def __init__(self) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.release.set()
        self.entered = asyncio.Event()

    async def run(self, sent: Command) -> Reply:
        self.runs += 1
        self.entered.set()
        await self.release.wait()
        return Reply(id=sent.id, ok=True, result={"setpoint": sent.args["value"]})


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[CommandLedger]:
    opened = CommandLedger(tmp_path / "spool.sqlite")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_retry_gets_the_first_outcome_and_runs_nothing(ledger: CommandLedger) -> None:
    instrument = Instrument()
    first = await ledger.run_once(command(id="c1"), instrument.run)
    again = await ledger.run_once(command(id="c2"), instrument.run)
    assert instrument.runs == 1
    assert (again.id, again.ok, again.result) == ("c2", True, {"setpoint": 80.0})
    assert first.result == again.result


async def test_a_retry_while_the_first_runs_waits_for_it(ledger: CommandLedger) -> None:
    instrument = Instrument()
    instrument.release.clear()
    first = asyncio.create_task(ledger.run_once(command(id="c1"), instrument.run))
    await asyncio.wait_for(instrument.entered.wait(), DEADLINE_S)
    second = asyncio.create_task(ledger.run_once(command(id="c2"), instrument.run))
    instrument.release.set()
    replies = await asyncio.wait_for(asyncio.gather(first, second), DEADLINE_S)
    assert instrument.runs == 1
    assert [r.id for r in replies] == ["c1", "c2"] and all(r.ok for r in replies)


async def test_the_same_key_for_another_command_is_refused(ledger: CommandLedger) -> None:
    instrument = Instrument()
    await ledger.run_once(command(value=80.0), instrument.run)
    other = await ledger.run_once(command(value=120.0, id="c2"), instrument.run)
    assert instrument.runs == 1
    assert other.error is not None and other.error.code == ErrorCode.IDEMPOTENCY_CONFLICT
    assert "set_setpoint" in other.error.message


async def test_a_command_that_never_started_leaves_its_key_free(ledger: CommandLedger) -> None:
    async def too_late(sent: Command) -> Reply:
        error = ErrorInfo(code=ErrorCode.DEADLINE_EXCEEDED, message="not run")
        return Reply(id=sent.id, ok=False, error=error)

    refused = await ledger.run_once(command(), too_late)
    assert refused.error is not None and refused.error.code == ErrorCode.DEADLINE_EXCEEDED
    instrument = Instrument()
    assert (await ledger.run_once(command(id="c2"), instrument.run)).ok
    assert instrument.runs == 1


async def test_outcomes_outlive_the_agent_and_a_lost_outcome_never_runs_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.sqlite"
    first = CommandLedger(path)
    await first.open()
    instrument = Instrument()
    await first.run_once(command(key="done"), instrument.run)
    # The agent is killed while a second keyed command runs: its start is on disk.
    instrument.release.clear()
    instrument.entered.clear()
    running = asyncio.create_task(first.run_once(command(key="cut"), instrument.run))
    await asyncio.wait_for(instrument.entered.wait(), DEADLINE_S)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    await first.close()

    again = CommandLedger(path)
    await again.open()
    try:
        instrument.release.set()
        done = await again.run_once(command(key="done", id="r1"), instrument.run)
        cut = await again.run_once(command(key="cut", id="r2"), instrument.run)
        assert instrument.runs == 2  # nothing ran after the restart
        assert done.ok and done.result == {"setpoint": 80.0}
        assert cut.error is not None and cut.error.code == ErrorCode.OUTCOME_UNKNOWN
    finally:
        await again.close()


@pytest.fixture
def sim() -> AsyncIterator[Simulator]:
    with Simulator(["kiln-air"], seed=3) as simulator:
        yield simulator  # type: ignore[misc]


def count_setpoints(sim: Simulator, on_setpoint: Callable[[], None] = lambda: None) -> list[str]:
    """The lines the simulated kiln receives, as they arrive (the instrument's own record)."""
    received: list[str] = []
    model = sim.model("kiln-air")
    handle = model.handle

    def counting(line: str, now: float) -> str | None:
        received.append(line)
        if line.startswith("SP "):
            on_setpoint()
        return handle(line, now)

    model.handle = counting  # type: ignore[method-assign]
    return received


def kiln_agent(hub: RunningHub, sim: Simulator) -> Agent:
    return Agent(
        AgentConfig(
            hub=hub.url,
            agent_id="pi",
            instruments=[
                InstrumentConfig(
                    id="kiln-air",
                    profile="kmz-kiln",
                    port=sim.paths["kiln-air"],
                    poll_interval_s=0.2,
                )
            ],
        )
    )


async def test_a_command_retried_after_its_reply_was_lost_runs_once_at_the_instrument(
    hub: RunningHub, sim: Simulator
) -> None:
    received = count_setpoints(sim)
    agent = kiln_agent(hub, sim)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.wait_for(agent.link.connected.wait(), DEADLINE_S)
        async with Client(hub.url) as client:
            async with client.subscribe("kiln-air") as readings:
                await asyncio.wait_for(anext(readings), DEADLINE_S)  # online and reading
            first = await client.command(
                "kiln-air", "set_setpoint", value=81.5, idempotency_key="batch-7-kiln"
            )
            # The client lost the reply (say): it sends the command again, twice.
            for _ in range(2):
                again = await client.command(
                    "kiln-air", "set_setpoint", value=81.5, idempotency_key="batch-7-kiln"
                )
                assert again == first
            with pytest.raises(CommandError) as refused:
                await client.command(
                    "kiln-air", "set_setpoint", value=90.0, idempotency_key="batch-7-kiln"
                )
            assert refused.value.code == ErrorCode.IDEMPOTENCY_CONFLICT
        assert [line for line in received if line.startswith("SP ")] == ["SP 81.50"]
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)


async def test_a_command_whose_reply_the_network_lost_is_retried_and_runs_once(
    hub: RunningHub, sim: Simulator
) -> None:
    # Issue 9's fault test: the proxy between client and hub drops the reply
    # (the connection is reset while the reply is on its way); the client
    # gets outcome_unknown, retries with the same key, and gets the outcome.
    got_setpoint = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The simulator runs in a thread of its own: it tells the loop.
    received = count_setpoints(sim, lambda: loop.call_soon_threadsafe(got_setpoint.set))
    agent = kiln_agent(hub, sim)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    port = int(hub.url.rsplit(":", 1)[1])
    try:
        await asyncio.wait_for(agent.link.connected.wait(), DEADLINE_S)
        async with (
            FaultProxy(port) as proxy,
            Client(proxy.url, reconnect=True, timeouts=Timeouts(reconnect_max_s=0.2)) as client,
        ):
            async with client.subscribe("kiln-air") as readings:
                await asyncio.wait_for(anext(readings), DEADLINE_S)
            # Everything through the proxy now arrives a second late: the
            # reply is still on its way when the connection is cut.
            proxy.delay(1.0)
            first = asyncio.create_task(
                client.command("kiln-air", "set_setpoint", value=77.0, idempotency_key="k-77")
            )
            await asyncio.wait_for(got_setpoint.wait(), DEADLINE_S)
            await proxy.reset()
            with pytest.raises(CommandError) as lost:
                await first
            assert lost.value.code == ErrorCode.OUTCOME_UNKNOWN
            proxy.pass_through()
            deadline = asyncio.get_running_loop().time() + DEADLINE_S
            while True:  # until the client has its connection back
                try:
                    again = await client.command(
                        "kiln-air", "set_setpoint", value=77.0, idempotency_key="k-77"
                    )
                    break
                except (CommandError, ConnectionLost):
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)  # the client has no event for "reconnected"
        assert again == {"value": 77.0}
        assert [line for line in received if line.startswith("SP ")] == ["SP 77.00"]
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)
