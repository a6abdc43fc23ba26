"""A client that was away resumes where it left off: the log's samples first, then live.

Issue 9, item 4: a client that reconnected jumped thousands of seqs per
instrument, and nothing said how much it missed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from kleinmaelzung.client import Client, Sample
from kleinmaelzung.hub import HubConfig, RunningHub, start_hub
from kleinmaelzung.protocol import Timeouts

from ..e2e.fault_proxy import FaultProxy
from ..hub.peers import DEADLINE_S, instrument, raw_agent, raw_client


async def test_a_client_away_for_a_while_gets_every_sample_once_in_order(
    tmp_path: Path,
) -> None:
    running = await start_hub(HubConfig(port=0, data_dir=tmp_path / "h"))
    port = int(running.url.rsplit(":", 1)[1])
    sent = 0
    more = asyncio.Event()
    try:
        async with (
            FaultProxy(port) as proxy,
            raw_agent(running.url, "pi", [instrument("balance")]) as agent,
            Client(proxy.url, reconnect=True, timeouts=Timeouts(reconnect_max_s=0.2)) as client,
        ):

            async def stream() -> None:
                nonlocal sent
                while True:
                    sample = {"instrument": "balance", "seq": sent, "ts": time.time()}
                    await agent.send({"type": "data", "samples": [{**sample, "values": {}}]})
                    sent += 1
                    more.set()
                    await asyncio.sleep(0.005)  # an instrument's pace, not a synchronisation

            async def until_sent(count: int) -> None:
                while sent < count:
                    more.clear()
                    await more.wait()

            received: list[int] = []
            async with client.subscribe("balance") as subscription:
                streaming = asyncio.create_task(stream())
                try:
                    async for event in subscription:
                        assert isinstance(event, Sample)
                        received.append(event.seq)
                        if len(received) == 20:
                            # Away: the connection drops and no new one gets through.
                            proxy.refuse(True)
                            await proxy.reset()
                            await asyncio.wait_for(until_sent(sent + 300), DEADLINE_S)
                            proxy.refuse(False)
                        if len(received) > 20 and event.seq >= 400:
                            break
                finally:
                    streaming.cancel()
                assert subscription.recovered is True
        assert received == list(range(len(received))), "a sample missed, repeated or reordered"
    finally:
        await running.stop()


async def test_a_position_the_log_cannot_honour_is_said_so_at_once(hub: RunningHub) -> None:
    async with raw_client(hub.url) as client:
        started = time.monotonic()
        await client.send(
            {
                "type": "subscribe",
                "id": "s",
                "patterns": ["balance"],
                # A position from another log (a hub whose log was reset).
                "since": {"balance": {"run": "old-run", "seq": 5120, "ts": time.time() - 60}},
            }
        )
        answer = await client.receive_type("subscribed")
        assert time.monotonic() - started < 1.0
        assert answer["recovered"] is False and answer["not_recovered"] == ["balance"]
