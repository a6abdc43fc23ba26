"""One of six clients stopped for a minute: the hub stays small, the others stay quick,
and the stopped one, once it runs again, gets what it missed (issue 9).

Before: a client stopped for 60 s was disconnected after 11 s, then printed
8 s of stale data with silent holes, reconnected and jumped 5,211 seqs per
instrument; nothing anywhere said how much it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .delivery_check import RawWatcher, percentile
from .processes import StreamingLab

WATCHERS = 5
BASELINE_S = 10.0
STOPPED_S = 60.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def latencies(watchers: list[RawWatcher], start: float, end: float) -> list[float]:
    return [r.received - r.ts for w in watchers for r in w.received if start <= r.received < end]


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_client_stopped_for_a_minute_costs_the_others_nothing_and_misses_nothing(
    tmp_path: Path,
) -> None:
    lab = StreamingLab(tmp_path, instruments=20, poll_interval_s=0.1)
    watchers = [RawWatcher(lab.url, name=f"watch-{i}") for i in range(WATCHERS)]
    tasks: list[asyncio.Task[None]] = []
    out = (tmp_path / "stopped.out").open("wb")
    err_path = tmp_path / "stopped.err"
    stopped: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.to_thread(lab.start)
        assert lab.hub is not None
        hub_pid = lab.hub.popen.pid
        tasks = [asyncio.create_task(w.run()) for w in watchers]
        stopped = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "kleinmaelzung.cli", "watch", "*", "--json", "--hub", lab.url],
            stdout=out,
            stderr=err_path.open("wb"),
        )
        for watcher in watchers:
            await asyncio.wait_for(watcher.subscribed_event.wait(), 15)

        started = time.time()
        await asyncio.sleep(BASELINE_S)  # measuring a duration, not waiting for an event
        baseline = percentile(latencies(watchers, started, time.time()), 0.99)
        rss_before = rss_mb(hub_pid)

        os.kill(stopped.pid, signal.SIGSTOP)
        stop_at = time.time()
        rss_most = rss_before
        while time.time() - stop_at < STOPPED_S:
            await asyncio.sleep(1.0)  # sampling the hub's memory once a second
            rss_most = max(rss_most, rss_mb(hub_pid))
        during = percentile(latencies(watchers, stop_at, time.time()), 0.99)
        os.kill(stopped.pid, signal.SIGCONT)
        resumed = time.time()

        # The stopped client catches up: it prints samples taken after it resumed.
        def caught_up() -> bool:
            lines = (tmp_path / "stopped.out").read_bytes().splitlines()
            return any(json.loads(line)["ts"] > resumed + 2 for line in lines[-50:])

        deadline = time.monotonic() + 60
        while not caught_up():
            assert time.monotonic() < deadline, err_path.read_text()[-3000:]
            await asyncio.sleep(0.2)  # the output file has no event for "written"
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped.pid, signal.SIGCONT)
            stopped.terminate()
            await asyncio.to_thread(stopped.wait, 15)
        out.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(lab.stop)

    figures = {
        "baseline_p99_ms": round(1000 * baseline, 1),
        "stopped_p99_ms": round(1000 * during, 1),
        "hub_rss_growth_mb": round(rss_most - rss_before, 1),
    }
    print("stalled client figures:", figures)
    assert rss_most - rss_before < 50, figures
    # 1.5x, or 10 ms more on a 2-core machine shared with other tests.
    assert during <= max(1.5 * baseline, baseline + 0.010), figures
    # What it printed: every seq of each instrument once, in order, across the
    # minute it was stopped (recovered from the log when it reconnected), or
    # a "missed" line naming what it did not get.
    seqs: dict[str, list[int]] = {}
    for line in (tmp_path / "stopped.out").read_bytes().splitlines():
        sample = json.loads(line)
        seqs.setdefault(sample["instrument"], []).append(sample["seq"])
    told = err_path.read_text()
    for instrument, got in seqs.items():
        expected = list(range(got[0], got[-1] + 1))
        assert got == expected or f"{instrument}  missed" in told, (instrument, figures)
