"""Kill -9 and SIGTERM the agent again and again while the hub is down (issue 9).

The hub is killed while samples stream; during the outage the agent is
stopped and restarted with the same config several times, each time taking new
samples into the same spool. After each stop the spool file is read: what it
held must still be there (no hub, so no acknowledgement), and after a SIGTERM
it must hold what the agent said it kept. Once the hub is back, every sample
that reached the spool must be logged exactly once, and of a process stopped
with SIGTERM not one sample may be missing.

A kill -9 may lose what was taken after the spool's last commit (0.5 s): the
time from the newest sample in the file to the kill is that window, measured.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from .delivery_check import (
    Key,
    check_delivery,
    process_run,
    read_hub_log,
    read_spool,
    spool_depth,
)
from .processes import StreamingLab, get_json, kept_in_spool, terminate, wait_until_async


def logged_data(url: str) -> bool | None:
    """Whether the hub has logged samples (its REST log answers with a data entry)."""
    page = get_json(url + "/api/log?limit=20") or {"entries": []}
    return True if any(e["type"] == "data" for e in page["entries"]) else None


async def restart_the_agent_during_an_outage(
    tmp: Path,
    *,
    instruments: int,
    rate_hz: float,
    signals: list[str],
    new_samples: int,
    seed: int = 5,
) -> dict[str, Any]:
    """Run the fault, check every verdict, and return the figures."""
    lab = StreamingLab(tmp, instruments=instruments, poll_interval_s=1 / rate_hz)
    try:
        await asyncio.to_thread(lab.start)
        await wait_until_async(lambda: logged_data(lab.url), "samples logged")
        assert lab.hub is not None
        await asyncio.to_thread(lab.hub.kill)
        outage_started = time.monotonic()

        rng = random.Random(seed)
        spooled: dict[Key, float] = {}
        stops: list[dict[str, Any]] = []
        for how in signals:
            agent = lab.agent
            assert agent is not None
            target = len(spooled) + new_samples
            await wait_until_async(
                lambda t=target: sum(spool_depth(lab.spool_path).values()) >= t or None,  # type: ignore[misc]
                f"{new_samples} new samples in the spool",
                30.0,
                agent,
            )
            # At a random moment between the spool's commits, as a power cut would come.
            await asyncio.sleep(rng.uniform(0, 0.6))
            sent = time.time()
            if how == "kill":
                await asyncio.to_thread(agent.kill)
            else:
                assert await asyncio.to_thread(terminate, agent) == 0, agent.output()
            held = read_spool(lab.spool_path)
            newest = held.newest_ts or 0.0
            stop = {
                "signal": how,
                "in_spool": len(held.samples),
                "newest_sample_before_signal_s": round(sent - newest, 3),
            }
            missing = set(spooled) - set(held.samples)
            assert not missing, f"after a {how}, the spool lost {len(missing)} samples it held"
            if how == "term":
                stop["kept_logged"] = kept_in_spool(agent.output())
                assert stop["kept_logged"] == len(held.samples), agent.output()
                # SIGTERM: it sampled until the signal and wrote every sample down.
                assert sent - newest < 1.5, stop
            else:
                # kill -9: what came after the last commit (0.5 s) is gone.
                assert sent - newest < 2.5, stop
            spooled.update(held.samples)
            stops.append(stop)
            await asyncio.to_thread(lab.start_agent)
        outage_s = time.monotonic() - outage_started

        old_runs = {key[0] for key in spooled}
        await asyncio.to_thread(lab.start_hub)
        returned = time.monotonic()

        def delivered() -> bool | None:
            held = spool_depth(lab.spool_path)
            return None if any(process_run(run) in old_runs for run in held) else True

        assert lab.hub is not None and lab.agent is not None
        await wait_until_async(delivered, "the spool delivered", 60.0, lab.hub, lab.agent)
        drain_s = time.monotonic() - returned
        assert await asyncio.to_thread(terminate, lab.agent) == 0, lab.outputs()
        assert await asyncio.to_thread(lab.hub.interrupt) == 0, lab.outputs()

        log = read_hub_log(lab.log_path)
        verdicts = check_delivery(log, spool=read_spool(lab.spool_path), spooled=spooled)
        for bad in ("lost", "duplicated", "out_of_order", "dropped"):
            assert verdicts.count(bad) == 0, f"{bad}:\n{verdicts.explain()}"
        assert not {key[0] for key in verdicts.keys("pending")} & old_runs, verdicts.explain()
        return {
            "instruments": instruments,
            "rate_hz": rate_hz,
            "outage_s": round(outage_s, 1),
            "agent_stops": stops,
            "reached_spool": len(spooled),
            "drain_after_hub_back_s": round(drain_s, 2),
            **verdicts.figures(),
        }
    finally:
        await asyncio.to_thread(lab.stop)


@pytest.mark.timeout(150)
async def test_agent_killed_and_terminated_during_an_outage_loses_nothing_spooled(
    tmp_path: Path,
) -> None:
    figures = await restart_the_agent_during_an_outage(
        tmp_path,
        instruments=5,
        rate_hz=20,
        signals=["kill", "term", "kill", "term"],
        new_samples=100,
    )
    print(json.dumps(figures))


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_agent_killed_and_terminated_six_times_with_20_instruments_at_50_hz(
    tmp_path: Path,
) -> None:
    figures = await restart_the_agent_during_an_outage(
        tmp_path,
        instruments=20,
        rate_hz=50,
        signals=["kill", "term"] * 3,
        new_samples=3000,
    )
    print(json.dumps(figures))
