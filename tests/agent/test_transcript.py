"""Raw serial transcripts: bounded at the agent, and end to end from a garbled pty line to
`kmz log --raw` through a real hub."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kleinmaelzung.agent import Agent, AgentConfig, InstrumentConfig
from kleinmaelzung.agent.transcript import Transcript
from kleinmaelzung.client import Client, CommandError, LogEntry, fetch_log
from kleinmaelzung.hub import RunningHub
from kleinmaelzung.protocol import RawTraffic, Timeouts, unescape_bytes
from kleinmaelzung.sim import Simulator

from ..test_cli import kmz_async

DEADLINE_S = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_transcript_keeps_to_its_rate_and_its_duration() -> None:
    sent: list[RawTraffic] = []
    clock = FakeClock()
    transcript = Transcript("balance", sent.append, monotonic=clock, wall=lambda: 1.7e9)
    transcript.rx(b"before it starts\r\n")
    assert sent == []
    assert transcript.start(10.0, rate=100) == 1.7e9 + 10.0
    transcript.tx(b"S\r\n")  # counts 32 bytes, whatever it holds
    transcript.rx(b"S S      12.345 g\r\n")
    transcript.rx(b"x" * 100)  # 36 of a 100-byte burst left: cut, the rest counted
    transcript.rx(b"y" * 10)  # nothing left
    assert [unescape_bytes(m.data) for m in sent] == [
        b"S\r\n",
        b"S S      12.345 g\r\n",
        b"x" * 36,
    ]
    assert [m.direction for m in sent] == ["tx", "rx", "rx"]
    assert sent[2].dropped == 64
    clock.now += 1.0  # a second: the bucket is full again
    transcript.rx(b"\x02\xfe\r\n")
    assert sent[-1].data == "\\x02\\xfe\\r\\n" and sent[-1].dropped == 10
    assert (transcript.sent_bytes, transcript.dropped_bytes) == (62, 74)
    clock.now += 10.0  # past its end: nothing more, without being told
    transcript.rx(b"late")
    assert len(sent) == 4 and not transcript.active
    assert transcript.start(5.0, rate=100) is not None
    assert transcript.start(0, rate=100) is None and not transcript.active


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(["balance"], seed=5) as simulator:
        yield simulator


async def raw_logged(url: str, condition: str) -> list[LogEntry]:
    """The balance's raw entries once one holds `condition` (the log commits in batches)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while True:
        entries = await fetch_log(url, instrument="balance", kind="raw", limit=500)
        if any(condition in e.message_object()["data"] for e in entries):
            return entries
        assert loop.time() < deadline, f"no raw entry with {condition!r}: {entries[:5]}"
        await asyncio.sleep(0.05)


async def test_a_garbled_line_is_read_at_the_hub_with_kmz_log_raw(
    hub: RunningHub, sim: Simulator, tmp_path: Path
) -> None:
    agent = Agent(
        AgentConfig(
            hub=hub.url,
            agent_id="bench-pi",
            instruments=[
                InstrumentConfig(
                    id="balance",
                    profile="mt-sics-balance",
                    port=sim.paths["balance"],
                    poll_interval_s=0.1,
                    reply_timeout_s=0.3,
                )
            ],
        ),
        timeouts=Timeouts(reconnect_max_s=0.5),
    )
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.link.connected.wait(), DEADLINE_S)
        async with Client(hub.url, name="bench") as client:
            result = await client.command(
                "balance", "transcript", duration_s=30, max_bytes_per_s=4096
            )
            assert result["max_bytes_per_s"] == 4096 and result["until"] > 0
            with pytest.raises(CommandError) as too_long:
                await client.command("balance", "transcript", duration_s=3600)
            assert too_long.value.code == "invalid_arguments"
            # A healthy exchange first, then line noise (a bad cable, a wrong baud rate).
            await raw_logged(hub.url, "S S ")
            sim.set_garbled("balance", True)
            entries = await raw_logged(hub.url, "$ $ ")
            sim.set_garbled("balance", False)
            await client.command("balance", "transcript", duration_s=0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    garbled = next(e for e in entries if "$ $ " in e.message_object()["data"])
    assert garbled.type == "raw" and garbled.direction == "in" and garbled.peer == "bench-pi"
    # ROT47 of "S S" with the line's own CR LF, exactly as the port gave them.
    assert unescape_bytes(garbled.message_object()["data"]).endswith(b"\r\n")
    assert {e.message_object()["direction"] for e in entries} == {"tx", "rx"}

    shown = await kmz_async("log", "--raw", "balance", "--since", "-5m", "--hub", hub.url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any("transcript for 30 s at 4096 B/s asked by client-" in line for line in lines)
    assert any("transcript stop asked by client-" in line for line in lines)
    # The refused one (an hour) was never sent on: not shown as a transcript.
    assert not any("3600" in line for line in lines)
    assert any(line.endswith("  tx  SI\\r\\n") for line in lines), lines[:10]
    assert any("  rx  $ $ " in line and line.endswith("\\r\\n") for line in lines)
    # Oldest first, like a transcript: the start comes before every byte.
    assert "transcript for 30 s" in lines[0]
    as_json = await kmz_async("log", "--raw", "balance", "--json", "--hub", hub.url)
    assert {e["type"] for e in json.loads(as_json.stdout)} == {"raw", "transcript"}


async def test_a_driver_that_cannot_tap_its_port_says_so(hub: RunningHub, tmp_path: Path) -> None:
    agent = Agent(
        AgentConfig(
            hub=hub.url,
            agent_id="i2c-pi",
            instruments=[
                InstrumentConfig(
                    id="germ-chamber",
                    driver="i2c",
                    settings={"sensor": "sht3x", "address": 0x44, "simulated": True},
                )
            ],
        ),
    )
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.link.connected.wait(), DEADLINE_S)
        async with Client(hub.url) as client:
            with pytest.raises(CommandError) as refused:
                await client.command("germ-chamber", "transcript", duration_s=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert refused.value.code == "unknown_command"
    assert "serial line" in str(refused.value)
