"""What the hub knows of each agent: spool, clock, logged seqs (`/api/agents`, `kmz agents`)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time

import pytest

from kleinmaelzung.client import fetch_agents
from kleinmaelzung.hub import RunningHub
from kleinmaelzung.hub.clocks import ClockOffset

from .peers import instrument, raw_agent

DEADLINE_S = 10.0


def test_the_offset_is_the_smallest_delay_and_follows_a_stepped_clock() -> None:
    clock = ClockOffset(window_s=60.0)
    assert clock.offset_s is None and clock.within(1.0)
    # The agent's clock is 2.5 s ahead; transit varies from 1 ms to 300 ms.
    for i, transit in enumerate([0.3, 0.001, 0.05, 0.2]):
        hub = 1000.0 + i
        clock.observe(hub - transit + 2.5, hub)
    assert clock.offset_s == pytest.approx(2.5 - 0.001)
    assert not clock.within(1.0)
    # The agent's clock is corrected: within two windows the estimate follows.
    for i in range(130):
        hub = 1010.0 + i
        clock.observe(hub - 0.002, hub)
    assert clock.offset_s == pytest.approx(-0.002)
    assert clock.within(1.0) and clock.far == 0
    clock.observe(3.0, 2e9)  # a sample from 1970
    assert clock.far == 1


def sample(seq: int, ts: float) -> dict[str, object]:
    return {"instrument": "balance", "seq": seq, "ts": ts, "values": {"mass": 1.0}}


async def test_an_agent_whose_clock_is_off_is_flagged_and_logged_once(
    hub: RunningHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "kleinmaelzung.hub.handlers")
    async with raw_agent(hub.url, "pi", [instrument("balance")]) as agent:
        for seq in range(5):
            await agent.send({"type": "data", "samples": [sample(seq, time.time() + 30.0)]})
        await agent.send(
            {"type": "agent_state", "spool_depth": 12, "spool_oldest": 1.7e9, "dropped": 3}
        )
        deadline = time.monotonic() + DEADLINE_S
        while True:
            [record] = await fetch_agents(hub.url)
            if record.spool_depth is not None and record.logged_seqs.get("balance") == 4:
                break
            assert time.monotonic() < deadline, record
            await asyncio.sleep(0.02)  # the hub has no event for "state taken"
    assert record.id == "pi" and record.instruments == ["balance"]
    assert (record.spool_depth, record.spool_oldest, record.dropped) == (12, 1.7e9, 3)
    assert record.clock_offset_s is not None and 29.0 < record.clock_offset_s <= 30.0
    assert not record.clock_ok
    warnings = [r for r in caplog.records if r.getMessage() == "agent clock is off"]
    assert len(warnings) == 1


async def test_kmz_agents_shows_spool_and_clock(hub: RunningHub) -> None:
    async with raw_agent(hub.url, "malthouse-pi", [instrument("balance")]) as agent:
        await agent.send({"type": "data", "samples": [sample(0, time.time())]})
        await agent.send(
            {"type": "agent_state", "spool_depth": 0, "spool_oldest": None, "dropped": 0}
        )
        deadline = time.monotonic() + DEADLINE_S
        while (await fetch_agents(hub.url))[0].spool_depth is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)  # the hub has no event for "state taken"
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "kleinmaelzung.cli", "agents", "--hub", hub.url],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split()[:6] == ["AGENT", "STATE", "HOST", "SOFTWARE", "UPTIME", "CONFIG"]
    assert row.startswith("malthouse-pi") and "balance (seq 0)" in row
    assert " online " in row
    assert " OFF" not in row
