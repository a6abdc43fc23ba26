"""A client away for ten seconds comes back to every sample it missed, once, in order.

Hub, agent and simulated instruments are processes of their own; the client
(the Python client, as `kmz watch` uses it) reaches the hub through a fault
proxy that cuts it off and refuses it for ten seconds (issue 9).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kleinmaelzung.client import Client, Sample
from kleinmaelzung.protocol import Timeouts

from .fault_proxy import FaultProxy
from .processes import StreamingLab

AWAY_S = 10.0


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_client_away_for_ten_seconds_misses_nothing(tmp_path: Path) -> None:
    lab = StreamingLab(tmp_path, instruments=4, poll_interval_s=0.05)
    try:
        await asyncio.to_thread(lab.start)
        port = int(lab.url.rsplit(":", 1)[1])
        async with (
            FaultProxy(port) as proxy,
            Client(proxy.url, reconnect=True, timeouts=Timeouts(reconnect_max_s=0.5)) as client,
        ):
            received: dict[str, list[int]] = {}
            away_at: float | None = None
            back_at: float | None = None
            async with client.subscribe("*") as samples:
                async for event in samples:
                    assert isinstance(event, Sample)
                    received.setdefault(event.instrument, []).append(event.seq)
                    total = sum(map(len, received.values()))
                    if away_at is None and total >= 100:
                        away_at = time.time()
                        proxy.refuse(True)
                        await proxy.reset()

                        async def come_back() -> None:
                            await asyncio.sleep(AWAY_S)  # the outage's length, by design
                            proxy.refuse(False)

                        returning = asyncio.create_task(come_back())
                    if back_at is None and away_at is not None and event.ts > away_at + AWAY_S:
                        back_at = time.time()
                    if back_at is not None and time.time() > back_at + 2:
                        break
            await returning
            assert samples.recovered is True
    finally:
        await asyncio.to_thread(lab.stop)
    for instrument, seqs in received.items():
        first = seqs[0]
        assert seqs == list(range(first, first + len(seqs))), f"{instrument}: hole or repeat"
        # The ten seconds away are in there: 20 Hz, from the log.
        assert len(seqs) > 20 * AWAY_S, instrument
