"""Kill -9 the hub's log writer process while instruments stream (issue 10, item 2).

Separate processes: `kmz sim` thermometers on real ptys, `kmz hub` with the
writer process it starts, `kmz agent` with its spool. The writer is killed
with SIGKILL at seeded random intervals; the hub restarts it and sends it
again what its predecessor had not committed. Then the agent stops
(SIGTERM) and the hub with it: every sample the agent produced is in the
log exactly once and in order, or still in the agent's spool.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from pathlib import Path

import pytest

from .delivery_check import check_delivery, read_hub_log, read_spool
from .processes import StreamingLab, terminate, wait_until_async


def writer_pid(hub_pid: int) -> int | None:
    """The hub's child process (its log writer), None while it has none."""
    children: list[int] = []
    for task in Path(f"/proc/{hub_pid}/task").iterdir():
        try:
            children += [int(pid) for pid in (task / "children").read_text().split()]
        except OSError:
            continue
    return children[0] if children else None


@pytest.mark.timeout(120)
async def test_the_log_writer_killed_under_load_loses_and_repeats_nothing(tmp_path: Path) -> None:
    lab = StreamingLab(tmp_path, instruments=5, poll_interval_s=1 / 20)
    try:
        await asyncio.to_thread(lab.start)
        assert lab.hub is not None and lab.agent is not None
        hub = lab.hub
        rng = random.Random(10)
        kills = 0
        for _ in range(4):
            await asyncio.sleep(rng.uniform(0.5, 1.5))  # the fault schedule, not a synchronisation
            pid = await wait_until_async(lambda: writer_pid(hub.popen.pid), "a writer", 15, hub)
            os.kill(pid, signal.SIGKILL)
            kills += 1
            await wait_until_async(
                lambda p=pid: writer_pid(hub.popen.pid) not in (None, p) or None,  # type: ignore[misc]
                "the hub to start another writer",
                15,
                hub,
            )
        await asyncio.sleep(1.0)  # streaming on after the last kill
        assert await asyncio.to_thread(terminate, lab.agent) == 0, lab.outputs()
        assert await asyncio.to_thread(hub.interrupt) == 0, lab.outputs()

        log = read_hub_log(lab.log_path)
        verdicts = check_delivery(log, spool=read_spool(lab.spool_path))
        for bad in ("lost", "duplicated", "out_of_order", "dropped"):
            assert verdicts.count(bad) == 0, f"{bad}:\n{verdicts.explain()}"
        assert verdicts.count("ok") > 5 * 20 * 3, verdicts.figures()
        assert hub.output().count("traffic log writer stopped; restarting") == kills
        print(json.dumps({"writer_kills": kills, **verdicts.figures()}))
    finally:
        await asyncio.to_thread(lab.stop)
