"""A client never hands out a sample twice, also when a crashed hub's successor forwards a resend.

The hub forwards samples before they are committed; after a crash the agent
sends again what was not acknowledged, and the next hub, which never logged
them, forwards them again (`kmz watch` printed seq 4 twice in
tests/e2e/test_lab.py). Until delivery recovers by (run, seq) from the log
(issue 9), the client recognises the repeats by their seq and time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from kleinmaelzung.client import Client, Sample, Status
from kleinmaelzung.hub import HubConfig, start_hub

from ..e2e.processes import free_port
from .agent_peer import instrument, publish, raw_agent

DEADLINE_S = 10.0


async def samples(events: object, count: int) -> list[tuple[int, float]]:
    got = []
    while len(got) < count:
        event = await asyncio.wait_for(anext(events), DEADLINE_S)  # type: ignore[call-overload]
        if isinstance(event, Sample):
            got.append((event.seq, event.ts))
    return got


async def online(events: object) -> None:
    """Wait for the instrument to be reported online (also on subscribing again)."""
    while True:
        event = await asyncio.wait_for(anext(events), DEADLINE_S)  # type: ignore[call-overload]
        if isinstance(event, Status) and event.state == "online":
            return


async def test_a_resend_forwarded_by_the_next_hub_is_not_delivered_twice(tmp_path: Path) -> None:
    port = free_port()
    # The first hub's log is lost with it, as if it crashed before committing.
    first = await start_hub(HubConfig(port=port, data_dir=tmp_path / "first"))
    async with Client(first.url, reconnect=True) as client:
        events = await client.subscribe("balance", status=True)
        async with raw_agent(first.url, "pi", [instrument("balance")], run="r1") as agent:
            await publish(agent, "balance", 0, 1, 2, 3, 4)
            assert [s for s, _ in await samples(events, 5)] == [0, 1, 2, 3, 4]
            await first.stop()  # the hub goes while the agent is connected
        second = await start_hub(HubConfig(port=port, data_dir=tmp_path / "second"))
        try:
            async with raw_agent(second.url, "pi", [instrument("balance")], run="r1") as agent:
                await online(events)  # the client is back and subscribed again
                # The same run sends again what was never acknowledged, then new ones.
                await publish(agent, "balance", 3, 4, 5, 6)
                assert [s for s, _ in await samples(events, 2)] == [5, 6]
            # The agent restarts: a new run counts from 0 again, and is delivered.
            async with raw_agent(second.url, "pi", [instrument("balance")], run="r2") as agent:
                await online(events)
                await agent.send(
                    {
                        "type": "data",
                        "samples": [
                            {"instrument": "balance", "seq": s, "ts": 200.0 + s, "values": {}}
                            for s in (0, 1)
                        ],
                    }
                )
                assert await samples(events, 2) == [(0, 200.0), (1, 201.0)]
        finally:
            await second.stop()
