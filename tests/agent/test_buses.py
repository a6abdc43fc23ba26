"""Instruments on one bus take turns in that bus's thread; blocking drivers never block the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from typing import Any, ClassVar

from kleinmaelzung.agent import Agent, AgentConfig, InstrumentConfig
from kleinmaelzung.agent.drivers import BlockingDriver, Channel, InstrumentInfo, Value
from kleinmaelzung.client import Client, Sample
from kleinmaelzung.hub import RunningHub

DEADLINE_S = 10.0


class Recording(BlockingDriver):
    """A blocking instrument that takes 5 ms per reading and notes where and with whom."""

    lock: ClassVar[threading.Lock] = threading.Lock()
    active: ClassVar[dict[str, int]] = defaultdict(int)
    most_at_once: ClassVar[dict[str, int]] = defaultdict(int)
    threads: ClassVar[dict[str, set[int]]] = defaultdict(set)

    def info(self) -> InstrumentInfo:
        return InstrumentInfo(id=self.config.id, kind="test", channels=[Channel(name="n")])

    def open_blocking(self) -> None:
        pass

    def read_blocking(self) -> dict[str, Value]:
        bus = self.config.bus_name
        with self.lock:
            self.active[bus] += 1
            self.most_at_once[bus] = max(self.most_at_once[bus], self.active[bus])
            self.threads[self.config.id].add(threading.get_ident())
        time.sleep(0.005)  # the instrument's own time on the wire
        with self.lock:
            self.active[bus] -= 1
        return {"n": 1}

    def execute_blocking(self, name: str, args: dict[str, Any]) -> Any:
        return None


async def test_instruments_on_one_bus_take_turns_in_its_thread(hub: RunningHub) -> None:
    instruments = [
        InstrumentConfig(id="slave-1", driver="recording", bus="rs485", poll_interval_s=0.01),
        InstrumentConfig(id="slave-2", driver="recording", bus="rs485", poll_interval_s=0.01),
        InstrumentConfig(id="alone", driver="recording", poll_interval_s=0.01),
    ]
    config = AgentConfig(hub=hub.url, agent_id="bus-pi", instruments=instruments)
    agent = Agent(config, drivers={"recording": Recording})
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    try:
        async with Client(hub.url) as client:
            seen: dict[str, int] = defaultdict(int)
            async with asyncio.timeout(DEADLINE_S):
                async for event in client.subscribe("*"):
                    if isinstance(event, Sample):
                        seen[event.instrument] += 1
                    if len(seen) == 3 and min(seen.values()) >= 20:
                        break
    finally:
        stop.set()
        await asyncio.wait_for(running, DEADLINE_S)
    loop_thread = threading.get_ident()
    assert Recording.most_at_once["rs485"] == 1, "two exchanges at once on one bus"
    assert Recording.threads["slave-1"] == Recording.threads["slave-2"], "one thread per bus"
    assert len(Recording.threads["slave-1"]) == 1
    assert Recording.threads["alone"].isdisjoint(Recording.threads["slave-1"])
    assert loop_thread not in Recording.threads["slave-1"] | Recording.threads["alone"]
