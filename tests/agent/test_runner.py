"""One instrument's failures stay with that instrument: a real agent, a real hub, real ptys.

Issue 7, defect 7: a driver raising anything but a DriverError ended its
runner, and the agent with it. Defect 13: a fault whose reason carries the
offending reading sent a new status on every poll (528 in 20 s at 20 Hz).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.agent import (
    Agent,
    AgentConfig,
    InstrumentConfig,
    InstrumentError,
    NoAnswer,
    PortError,
    Spool,
)
from kleinmaelzung.agent import agent as agent_module
from kleinmaelzung.agent.drivers import discovery
from kleinmaelzung.agent.drivers.base import Driver
from kleinmaelzung.agent.drivers.discovery import find_driver
from kleinmaelzung.agent.drivers.serial_line import SerialLineDriver
from kleinmaelzung.agent.runner import InstrumentRunner, fault_kind
from kleinmaelzung.hub import RunningHub
from kleinmaelzung.protocol import Channel, CommandSpec, InstrumentInfo, Status, Timeouts, Value
from kleinmaelzung.sim import Simulator

from ..hub.peers import RawPeer, raw_client

DEADLINE_S = 10.0
RUNNER_LOG = "kleinmaelzung.agent.runner"


class BuggyDriver(Driver):
    """A driver with a bug: its reads fail with a ValueError, as a number parse does.

    Its port is its behaviour: "open-fails:N" makes the first N opens raise
    OSError (a library's own exception, not a PortError).
    """

    def __init__(self, config: InstrumentConfig) -> None:
        self.config = config
        self.opens = 0
        self.open_failures = int(config.port.split(":")[1]) if ":" in config.port else 0
        self.reads = 0
        self.closed = False

    @staticmethod
    def check_config(config: InstrumentConfig) -> None:
        """Any config will do."""

    def info(self) -> InstrumentInfo:
        return InstrumentInfo(
            id=self.config.id,
            kind="buggy",
            channels=[Channel(name="level")],
            commands=[CommandSpec(name="poke")],
        )

    async def open(self) -> None:
        self.opens += 1
        self.closed = False
        if self.opens <= self.open_failures:
            raise OSError(f"library trouble on attempt {self.opens}")

    async def read(self) -> dict[str, Value]:
        self.reads += 1
        raise ValueError(f"could not convert string to float: '#{self.reads}'")

    async def execute(self, name: str, args: dict[str, Any]) -> Any:
        raise KeyError(name)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def buggy_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register BuggyDriver as driver "buggy" for this test only."""
    real = find_driver

    def find(name: str) -> Any:
        return BuggyDriver if name == "buggy" else real(name)

    monkeypatch.setattr(discovery, "find_driver", find)
    monkeypatch.setattr(agent_module, "find_driver", find)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(["kiln-air"], seed=7) as simulator:
        yield simulator


def kiln(sim: Simulator, poll_s: float = 0.05, profile: str = "kmz-kiln") -> InstrumentConfig:
    return InstrumentConfig(
        id="kiln-air",
        profile=profile,
        port=sim.paths["kiln-air"],
        poll_interval_s=poll_s,
        reply_timeout_s=0.3,
    )


@asynccontextmanager
async def running(hub: RunningHub, *instruments: InstrumentConfig) -> AsyncIterator[Agent]:
    """An agent serving `instruments` to the hub, connected; cancelled on exit."""
    agent = Agent(
        AgentConfig(hub=hub.url, agent_id="test-pi", instruments=list(instruments)),
        timeouts=Timeouts(reconnect_max_s=0.5),
    )
    task = asyncio.create_task(agent.run())
    connected = asyncio.ensure_future(agent.link.connected.wait())
    try:
        await asyncio.wait({task, connected}, timeout=DEADLINE_S, return_when="FIRST_COMPLETED")
        if task.done():
            task.result()  # the agent's own exception, if it had one
            pytest.fail("the agent stopped by itself")
        assert connected.done(), "the agent did not connect"
        yield agent
        assert not task.done(), "the agent stopped by itself"
    finally:
        connected.cancel()
        task.cancel()
        await asyncio.gather(task, connected, return_exceptions=True)


async def subscribe(client: RawPeer, *patterns: str) -> None:
    await client.send({"type": "subscribe", "id": "s", "patterns": list(patterns)})
    await client.receive_type("subscribed")


async def status_of(client: RawPeer, instrument: str, state: str) -> dict[str, Any]:
    """The next status of `instrument` in `state`, skipping everything else."""
    while True:
        status = await client.receive_type("status", timeout=DEADLINE_S)
        if (status["instrument"], status["state"]) == (instrument, state):
            return status


async def samples_of(client: RawPeer, instrument: str, count: int) -> list[dict[str, Any]]:
    """The next `count` samples of `instrument`."""
    samples: list[dict[str, Any]] = []
    while len(samples) < count:
        data = await client.receive_type("data", timeout=DEADLINE_S)
        samples += [s for s in data["samples"] if s["instrument"] == instrument]
    return samples


async def test_a_driver_that_raises_faults_its_instrument_and_the_others_keep_going(
    hub: RunningHub, sim: Simulator, buggy_driver: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, RUNNER_LOG)
    buggy = InstrumentConfig(id="buggy", driver="buggy", port="none", poll_interval_s=0.02)
    async with raw_client(hub.url) as client:
        await subscribe(client, "*")
        async with running(hub, kiln(sim), buggy) as agent:
            status = await status_of(client, "buggy", "faulted")
            assert "ValueError: could not convert string to float" in status["reason"]
            runner = agent.runners["buggy"]
            reads = runner.driver.reads  # type: ignore[attr-defined]
            # The kiln keeps delivering while the buggy driver keeps failing.
            await samples_of(client, "kiln-air", 20)
            assert runner.driver.reads > reads + 10  # type: ignore[attr-defined]

            # A command whose driver raises gets an answer, and polling goes on.
            await client.send(
                {"type": "command", "id": "c1", "instrument": "buggy", "name": "poke"}
            )
            reply = await client.receive_type("reply", timeout=DEADLINE_S)
            assert (reply["ok"], reply["error"]["code"]) == (False, "internal_error")
            assert "KeyError" in reply["error"]["message"]
            assert "may have reached the instrument" in reply["error"]["message"]
            reads = runner.driver.reads  # type: ignore[attr-defined]
            await samples_of(client, "kiln-air", 5)
            assert runner.driver.reads > reads  # type: ignore[attr-defined]
            await client.send({"type": "list_instruments", "id": "l1"})
            listed = await client.receive_type("instrument_list")
            by_id = {i["id"]: i for i in listed["instruments"]}
            assert by_id["buggy"]["state"] == "faulted"
            assert "could not convert" in by_id["buggy"]["reason"]
            assert by_id["kiln-air"]["state"] == "online"

    # Each unexpected failure is logged once with its traceback, not once per poll.
    tracebacks = [r for r in caplog.records if r.exc_info and r.name == RUNNER_LOG]
    assert [r.exc_info[0] for r in tracebacks if r.exc_info] == [ValueError, KeyError]


async def test_a_profile_whose_number_does_not_parse_faults_only_that_instrument(
    hub: RunningHub, sim: Simulator, tmp_path: Path
) -> None:
    # The pattern captures "PV=25.00" as the temperature: float() raises ValueError.
    profile = tmp_path / "bad-kiln.toml"
    profile.write_text(
        'name = "bad-kiln"\nkind = "kiln-controller"\n'
        "[poll]\nquery = \"MEAS?\"\npattern = '^(?P<temperature>PV=[^,]+),.*$'\n"
        '[[channels]]\nname = "temperature"\n',
        encoding="utf-8",
    )
    with Simulator(["balance"], seed=3) as other:
        balance = InstrumentConfig(
            id="balance",
            profile="mt-sics-balance",
            port=other.paths["balance"],
            poll_interval_s=0.05,
        )
        async with raw_client(hub.url) as client:
            await subscribe(client, "*")
            async with running(hub, kiln(sim, profile=str(profile)), balance):
                status = await status_of(client, "kiln-air", "faulted")
                assert "could not convert string to float: 'PV=" in status["reason"]
                await samples_of(client, "balance", 10)


async def test_a_driver_whose_open_raises_is_retried_with_backoff(
    hub: RunningHub, sim: Simulator, buggy_driver: None
) -> None:
    buggy = InstrumentConfig(id="buggy", driver="buggy", port="open-fails:2", poll_interval_s=0.02)
    async with raw_client(hub.url) as client:
        await subscribe(client, "buggy")
        async with running(hub, kiln(sim), buggy) as agent:
            status = await status_of(client, "buggy", "faulted")
            assert "OSError: library trouble on attempt 1" in status["reason"]
            # Opened on the third attempt; then its reads fail.
            while "could not convert" not in status["reason"]:
                status = await status_of(client, "buggy", "faulted")
            assert agent.runners["buggy"].driver.opens == 3  # type: ignore[attr-defined]


async def test_an_instrument_answering_garbage_sends_one_faulted_status(
    hub: RunningHub, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, RUNNER_LOG)
    async with raw_client(hub.url) as client:
        await subscribe(client, "kiln-air")
        async with running(hub, kiln(sim, poll_s=0.05)) as agent:  # 20 Hz
            # Statuses sent on connecting come before the first sample.
            await samples_of(client, "kiln-air", 1)
            sim.set_garbled("kiln-air", True)
            await asyncio.wait_for(until(lambda: len(garbage_seen(caplog)) >= 40), DEADLINE_S)
            sim.set_garbled("kiln-air", False)
            statuses = []
            while not statuses or statuses[-1]["state"] != "online":
                message = await client.receive(timeout=DEADLINE_S)
                if message["type"] == "status":
                    statuses.append(message)
            # The reason's detail (the bad answer) changed on every poll.
            assert len({r.reason for r in garbage_seen(caplog)}) > 10  # type: ignore[attr-defined]
            assert [s["state"] for s in statuses] == ["faulted", "online"]
            assert "unexpected answer to 'MEAS?'" in statuses[0]["reason"]
            runner = agent.runners["kiln-air"]
            assert runner.state == "online"
    warnings = [r for r in caplog.records if r.name == RUNNER_LOG and r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["instrument faulted"]


async def test_a_lasting_fault_is_summarised_now_and_then_with_the_latest_detail(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, RUNNER_LOG)
    config = kiln(sim, poll_s=0.02)
    statuses: list[Status] = []
    outbox = Spool(None, run="r.0")
    runner = InstrumentRunner(
        config, SerialLineDriver(config), outbox, statuses.append, fault_summary_s=0.3
    )
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(runner.run())
    try:
        # Garbled once open: garbled from the start, the identify probe refuses the port.
        await asyncio.wait_for(until(lambda: outbox.depth > 0), DEADLINE_S)
        sim.set_garbled("kiln-air", True)
        started = loop.time()
        await asyncio.wait_for(until(lambda: runner.fault_count >= 50), DEADLINE_S)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    elapsed = loop.time() - started
    assert [s.state for s in statuses] == ["faulted"]
    # The latest bad answer is kept for the next status the link sends (on reconnect).
    assert runner.status().reason != statuses[0].reason
    assert "unexpected answer to 'MEAS?'" in runner.status().reason
    summaries = [
        r
        for r in caplog.records
        if r.name == RUNNER_LOG and r.levelno == logging.WARNING and r.msg == "still faulted"
    ]
    assert 1 <= len(summaries) <= elapsed / 0.3 + 1
    assert summaries[-1].failures > summaries[0].failures  # type: ignore[attr-defined]
    assert len([r for r in caplog.records if r.msg == "still faulted"]) >= 49


def bad_answer(answer: str) -> InstrumentError:
    """What the serial_line driver raises for an answer its pattern does not match."""
    return InstrumentError(f"unexpected answer to 'MEAS?': {answer!r}")


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        (  # the bad reading changes from poll to poll
            bad_answer("!'lac_b[$!lez_" + 'x"y'),  # repr() escapes one kind of quote
            bad_answer("!'lad_a,3.7e-5"),
            True,
        ),
        (
            ValueError("could not convert string to float: 'PV=25.01'"),
            ValueError("could not convert string to float: 'PV=24.97'"),
            True,
        ),
        (NoAnswer("no answer to 'MEAS?' within 0.3 s"), NoAnswer("no answer within 1e-3 s"), False),
        (
            InstrumentError("overload (instrument answered 'T +')"),
            InstrumentError("underload (instrument answered 'T -')"),
            False,
        ),
        (PortError("cannot open /dev/ttyUSB0"), InstrumentError("cannot open /dev/ttyUSB0"), False),
        (OSError("library trouble on attempt 1"), OSError("library trouble on attempt 2"), True),
    ],
)
def test_fault_kind_ignores_the_variable_detail_only(
    first: Exception, second: Exception, same: bool
) -> None:
    assert (fault_kind(first) == fault_kind(second)) is same


def garbage_seen(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The runner's log records of a garbled answer: one per poll."""
    return [
        r
        for r in caplog.records
        if r.name == RUNNER_LOG and "unexpected answer" in getattr(r, "reason", "")
    ]


async def until(condition: Callable[[], bool]) -> None:
    """Re-check a condition; callers bound it with wait_for."""
    while not condition():  # noqa: ASYNC110 - log records come with no event
        await asyncio.sleep(0.01)
