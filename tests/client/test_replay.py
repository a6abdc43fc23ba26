"""Replay: a client watching `replay.*` sees a logged run again, its spacing over the speed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kleinmaelzung.client import Client, Sample
from kleinmaelzung.client.replay import replay, replay_id
from kleinmaelzung.hub import HubConfig, RunningHub, start_hub

from ..hub.data_lab import NOVEMBER, kiln
from ..hub.peers import raw_agent

#: When the kiln's readings were taken, in seconds from NOVEMBER: uneven on purpose.
OFFSETS = [0.0, 1.0, 3.0, 4.0, 8.0, 10.0, 10.5, 14.0]
SPEED = 10.0
#: How far a sample's arrival may be from its due time (a loaded CI machine).
TOLERANCE_S = 0.08


@pytest.fixture
async def logged_run(tmp_path: Path) -> AsyncIterator[RunningHub]:
    running = await start_hub(HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "data"))
    try:
        async with raw_agent(running.url, "pi-1", [kiln("kiln-air"), kiln("kiln-water")]) as agent:
            samples = [
                {
                    "instrument": "kiln-air",
                    "seq": i,
                    "ts": NOVEMBER + offset,
                    "values": {"temperature": 20.0 + i},
                }
                for i, offset in enumerate(OFFSETS)
            ]
            # The other kiln, outside the replayed pattern.
            samples.append(
                {
                    "instrument": "kiln-water",
                    "seq": 0,
                    "ts": NOVEMBER + 2,
                    "values": {"temperature": 5.0},
                }
            )
            await agent.send({"type": "data", "samples": samples})
            await agent.receive_type("ack")
        await running.hub.store.flush()
        yield running
    finally:
        await running.stop()


@pytest.mark.slow
async def test_a_client_sees_the_replay_with_the_spacing_divided_by_the_speed(
    logged_run: RunningHub,
) -> None:
    seen: list[tuple[float, Sample]] = []
    async with Client(logged_run.url) as client, client.subscribe("replay.*") as subscription:

        async def watch() -> None:
            async for event in subscription:
                assert isinstance(event, Sample)
                seen.append((time.monotonic(), event))
                if len(seen) == len(OFFSETS):
                    return

        watching = asyncio.create_task(watch())
        result = await replay(
            logged_run.url,
            since=NOVEMBER - 1,
            until=NOVEMBER + 60,
            instrument="kiln-a*",
            speed=SPEED,
        )
        await asyncio.wait_for(watching, 10)

    assert result.ids == {"kiln-air": "replay.kiln-air"}
    assert result.samples == {"replay.kiln-air": len(OFFSETS)}
    assert [s.instrument for _, s in seen] == ["replay.kiln-air"] * len(OFFSETS)
    assert [s.values["temperature"] for _, s in seen] == [20.0 + i for i in range(len(OFFSETS))]
    # Each sample is dated and arrives 1/SPEED as far from the first as it was taken.
    first_arrival, first = seen[0]
    expected = [offset / SPEED for offset in OFFSETS]
    assert [s.ts - first.ts for _, s in seen] == pytest.approx(expected, abs=1e-6)
    arrived = [at - first_arrival for at, _ in seen]
    assert arrived == pytest.approx(expected, abs=TOLERANCE_S)
    # The replay is listed as such, apart from the live instrument.
    listed = {r.id: r for r in await client_list(logged_run.url)}
    assert listed["replay.kiln-air"].description.startswith("replay of kiln-air")
    assert listed["replay.kiln-air"].commands == []
    assert listed["kiln-air"].agent == "pi-1"


async def client_list(url: str) -> list:  # type: ignore[type-arg]
    async with Client(url) as client:
        return await client.instruments()


def test_a_replayed_id_that_would_not_be_an_id_is_refused() -> None:
    assert replay_id("kiln-air") == "replay.kiln-air"
    with pytest.raises(ValueError, match="cannot be replayed"):
        replay_id("k" * 60)
