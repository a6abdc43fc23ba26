"""Kill -9 the hub again and again while instruments stream (issue 9's first fault test).

Separate processes: `kmz sim` thermometers on real ptys, `kmz hub`, `kmz agent`
with its spool, `kmz watch --json`, and a raw WebSocket client that records
what the hub sends before any client-side filtering. The hub is killed at
seeded random intervals and restarted on the same port and log.

At the last kill the agent is stopped (SIGTERM) with no hub to talk to: then
every sample it produced must be in the hub's log or in its spool, so nothing
was acknowledged that was not stored. A new hub and agent then deliver the
spool, and every sample must be logged exactly once, in order per run; the
clients must have seen none twice and none out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .delivery_check import (
    RawWatcher,
    check_client,
    check_delivery,
    percentile,
    process_run,
    read_hub_log,
    read_spool,
    spool_depth,
)
from .processes import (
    Process,
    StreamingLab,
    kept_in_spool,
    terminate,
    wait_until_async,
    watch_lines,
)


async def kill_the_hub_repeatedly(
    tmp: Path,
    *,
    instruments: int,
    rate_hz: float,
    duration_s: float,
    kill_every_s: tuple[float, float],
    seed: int,
) -> dict[str, Any]:
    """Run the fault, check every verdict, and return the figures."""
    lab = StreamingLab(tmp, instruments=instruments, poll_interval_s=1 / rate_hz)
    watcher = RawWatcher(lab.url)
    watching: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(lab.start)
        watching = asyncio.create_task(watcher.run())
        watch = Process("watch", ["watch", "therm-*", "--json", "--hub", lab.url], tmp)
        lab.processes.append(watch)
        await wait_until_async(lambda: watcher.subscribed or None, "the raw watcher subscribed")

        rng = random.Random(seed)
        started = time.monotonic()
        downtimes: list[float] = []
        while True:
            pause = rng.uniform(*kill_every_s)
            if time.monotonic() + pause > started + duration_s:
                break
            await asyncio.sleep(pause)  # the fault schedule, not a synchronisation
            assert lab.hub is not None
            killed = time.monotonic()
            await asyncio.to_thread(lab.hub.kill)
            await asyncio.to_thread(lab.start_hub)
            downtimes.append(time.monotonic() - killed)
        await asyncio.sleep(max(0.0, started + duration_s - time.monotonic()))

        # The crash point: the hub dies, then the agent stops with nobody to deliver to.
        assert lab.hub is not None and lab.agent is not None
        await asyncio.to_thread(lab.hub.kill)
        streamed_s = time.monotonic() - started
        assert await asyncio.to_thread(terminate, lab.agent) == 0, lab.outputs()
        await asyncio.to_thread(watch.interrupt)
        at_crash = read_hub_log(lab.log_path)
        spooled = read_spool(lab.spool_path)
        crash = check_delivery(at_crash, spool=spooled)
        assert crash.count("lost") == 0, "acknowledged but not stored:\n" + crash.explain()
        assert crash.count("duplicated") == crash.count("out_of_order") == 0, crash.explain()
        kept = kept_in_spool(lab.agent.output())
        assert (kept or 0) == len(spooled.samples), (
            f"the agent said it kept {kept}; its spool holds {dict(spooled.runs)}\n"
            + lab.agent.output()[-3000:]
        )

        # A new hub and agent deliver what the spool kept.
        old_runs = {process_run(run) for run in spooled.runs}
        await asyncio.to_thread(lab.start_hub)
        await asyncio.to_thread(lab.start_agent)
        await asyncio.to_thread(lab.wait_online)  # even with nothing kept, it is up

        def delivered() -> bool | None:
            held = spool_depth(lab.spool_path)
            return None if any(process_run(run) in old_runs for run in held) else True

        await wait_until_async(delivered, "the spool's backlog delivered", 60.0, lab.hub, lab.agent)
        assert await asyncio.to_thread(terminate, lab.agent) == 0, lab.outputs()
        watching.cancel()
        assert await asyncio.to_thread(lab.hub.interrupt) == 0, lab.outputs()

        log = read_hub_log(lab.log_path)
        spool = read_spool(lab.spool_path)
        verdicts = check_delivery(log, spool=spool, spooled=spooled.samples)
        for bad in ("lost", "duplicated", "out_of_order", "dropped"):
            assert verdicts.count(bad) == 0, f"{bad}:\n{verdicts.explain()}"
        # What the last agent keeps is its own (see the stranded-samples test),
        # never anything of the runs that streamed through the kills.
        pending_runs = {key[0] for key in verdicts.keys("pending")}
        assert not pending_runs & old_runs, verdicts.explain()

        client = check_client(watcher.received, log)
        assert client.duplicated == [], client.figures()
        assert client.out_of_order == [], client.figures()
        assert client.not_logged == [], client.figures()

        # kmz watch spans the kills, one agent process: seqs only grow per instrument.
        printed = watch_lines(watch.output())
        by_instrument: dict[str, list[int]] = {}
        for line in printed:
            by_instrument.setdefault(line["instrument"], []).append(line["seq"])
        for instrument, seqs in by_instrument.items():
            assert seqs == sorted(set(seqs)), f"kmz watch: {instrument} repeated or reordered"

        # The agent process that streamed through the kills: the one whose
        # spool held samples at the end, or (when its spool was empty then)
        # the one that produced the most.
        streaming_run = (
            next(iter(old_runs), None)
            or (Counter(key[0] for key in verdicts.by_key).most_common(1)[0][0])
        )
        produced = sum(1 for key in verdicts.by_key if key[0] == streaming_run)
        latencies = [r.latency_s for r in watcher.received]
        return {
            "instruments": instruments,
            "rate_hz": rate_hz,
            "streamed_s": round(streamed_s, 1),
            "hub_kills": len(downtimes) + 1,
            "hub_down_s_mean": round(sum(downtimes) / max(1, len(downtimes)), 2),
            "samples_per_s_achieved": round(produced / streamed_s, 1),
            "kept_in_spool_at_crash": len(spooled.samples),
            **verdicts.figures(),
            "logged_rows": log.samples,
            "client": client.figures(),
            "client_p99_ms": round(1000 * percentile(latencies, 0.99), 1),
            "kmz_watch_printed": len(printed),
        }
    finally:
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        await asyncio.to_thread(lab.stop)


@pytest.mark.timeout(150)
async def test_hub_killed_every_few_seconds_logs_every_sample_once(tmp_path: Path) -> None:
    figures = await kill_the_hub_repeatedly(
        tmp_path, instruments=5, rate_hz=10, duration_s=10, kill_every_s=(2, 4), seed=9
    )
    print(json.dumps(figures))
    assert figures["hub_kills"] >= 3


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_hub_killed_every_3_to_7_s_for_60_s_with_20_instruments_at_50_hz(
    tmp_path: Path,
) -> None:
    figures = await kill_the_hub_repeatedly(
        tmp_path, instruments=20, rate_hz=50, duration_s=60, kill_every_s=(3, 7), seed=9
    )
    print(json.dumps(figures))
    assert figures["hub_kills"] >= 9
