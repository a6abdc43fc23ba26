"""Hub down longer than the spool keeps: exactly the oldest samples go, and a gap says which.

The agent reaches the hub through a fault proxy, so that after the hub is
back the agent is let through only once every client has subscribed again:
a gap is sent to the clients connected when the agent reports it (a client
that reconnects later learns of it from the log only, until clients can
recover what they missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from kleinmaelzung.client import Client
from kleinmaelzung.protocol import Gap

from .delivery_check import (
    LoggedGap,
    RawWatcher,
    check_delivery,
    read_hub_log,
    read_spool,
    spool_depth,
    spool_gaps,
)
from .fault_proxy import FaultProxy
from .processes import (
    Process,
    StreamingLab,
    free_port,
    get_json,
    terminate,
    wait_until_async,
)

MAX_SAMPLES = 150


def subscribes_logged(url: str) -> int:
    """How many `subscribe` messages the hub's log holds (it outlives hub restarts)."""
    page = get_json(url + "/api/log?limit=10000") or {"entries": []}
    return sum(1 for e in page["entries"] if e["type"] == "subscribe" and e["direction"] == "in")


def as_logged(gap: Gap) -> LoggedGap:
    return LoggedGap(gap.instrument, gap.run, gap.first_seq, gap.last_seq, gap.count, gap.reason)


@pytest.mark.timeout(120)
async def test_hub_down_past_the_spool_limit_drops_the_oldest_and_says_which(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with FaultProxy(port) as proxy:
        lab = StreamingLab(
            tmp_path,
            instruments=8,
            poll_interval_s=0.05,
            port=port,
            agent_hub_url=proxy.url,
            max_samples=MAX_SAMPLES,
        )
        watcher = RawWatcher(lab.url)
        tasks: list[asyncio.Task[None]] = []
        try:
            await asyncio.to_thread(lab.start)
            tasks.append(asyncio.create_task(watcher.run()))
            watch = Process("watch", ["watch", "therm-*", "--hub", lab.url], tmp_path)
            lab.processes.append(watch)
            async with Client(lab.url, name="gap-watch", reconnect=True) as client:
                subscription = await client.subscribe("therm-*", status=True)
                gaps: list[LoggedGap] = []

                async def collect() -> None:
                    async for event in subscription:
                        if isinstance(event, Gap):
                            gaps.append(as_logged(event))

                tasks.append(asyncio.create_task(collect()))
                await wait_until_async(
                    lambda: subscribes_logged(lab.url) >= 3 or None, "three clients subscribed"
                )

                # The hub goes away; the agent's spool fills past its limit.
                assert lab.hub is not None
                await asyncio.to_thread(lab.hub.kill)
                proxy.refuse(True)
                await proxy.reset()
                await wait_until_async(
                    lambda: sum(g.count for g in spool_gaps(lab.spool_path)) >= MAX_SAMPLES or None,
                    "the spool dropping samples",
                    30.0,
                )
                outage_runs = set(spool_depth(lab.spool_path))

                # The hub is back; once the clients are, so is the agent.
                await asyncio.to_thread(lab.start_hub)
                await wait_until_async(
                    lambda: subscribes_logged(lab.url) >= 6 or None,
                    "three clients subscribed again",
                    30.0,
                )
                proxy.refuse(False)

                def delivered() -> bool | None:
                    held = spool_depth(lab.spool_path)
                    pending = spool_gaps(lab.spool_path) or any(r in outage_runs for r in held)
                    return None if pending else True

                assert lab.agent is not None
                await wait_until_async(delivered, "the backlog and gaps delivered", 40.0, lab.agent)
                await wait_until_async(
                    lambda: (len(gaps) >= len(watcher.gaps) > 0) or None, "gaps at the client"
                )
                printed_gaps = [line for line in watch.output().splitlines() if " missed " in line]
            assert await asyncio.to_thread(terminate, lab.agent) == 0, lab.outputs()
            await asyncio.to_thread(watch.interrupt)
            assert await asyncio.to_thread(lab.hub.interrupt) == 0, lab.outputs()
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.to_thread(lab.stop)

    log = read_hub_log(lab.log_path)
    verdicts = check_delivery(log, spool=read_spool(lab.spool_path))
    for bad in ("lost", "duplicated", "out_of_order"):
        assert verdicts.count(bad) == 0, f"{bad}:\n{verdicts.explain()}"
    logged_gaps = list(dict.fromkeys(log.gaps))
    named = [key for gap in logged_gaps for key in gap.named()]
    assert len(named) == len(set(named)), "gaps overlap"
    for gap in logged_gaps:  # the spool held every seq of its range
        assert gap.count == gap.last_seq - gap.first_seq + 1, gap
    dropped = verdicts.count("dropped")
    assert dropped >= MAX_SAMPLES
    # No gap names a logged sample, and the gaps name exactly what was dropped.
    assert not verdicts.gapped_but_logged and not verdicts.wrong_gaps, verdicts.explain()
    assert dropped == sum(g.count for g in logged_gaps)

    # The oldest went: per instrument, the dropped seqs are one unbroken block,
    # and of the outage's run at most MAX_SAMPLES came back from the spool.
    for instrument in lab.ids:
        seqs = sorted(k[2] for k in verdicts.keys("dropped") if k[1] == instrument)
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"{instrument}: dropped {seqs}"
    backlog = sum(len(f.samples) for f in log.frames if f.backlog and f.run in outage_runs)
    assert 0 < backlog <= MAX_SAMPLES

    # Every client heard of every gap, as logged.
    assert set(gaps) == set(logged_gaps), (gaps, logged_gaps)
    assert set(watcher.gaps) == set(logged_gaps)
    for gap in logged_gaps:
        assert any(
            f"{gap.instrument}  missed {gap.count} samples" in line for line in printed_gaps
        ), printed_gaps
    print(
        json.dumps(
            {
                "max_samples": MAX_SAMPLES,
                **verdicts.figures(),
                "gaps_logged": len(logged_gaps),
                "named_by_a_gap_but_logged": len(verdicts.gapped_but_logged),
                "gap_rows_in_log": len(log.gaps),
                "backlog_logged_after_outage": backlog,
                "client_gaps": len(gaps),
                "kmz_watch_gap_lines": len(printed_gaps),
            }
        )
    )


@pytest.mark.timeout(120)
async def test_a_gap_never_names_a_logged_sample(tmp_path: Path) -> None:
    port = free_port()
    async with FaultProxy(port) as proxy:
        lab = StreamingLab(
            tmp_path,
            instruments=4,
            poll_interval_s=0.05,
            port=port,
            agent_hub_url=proxy.url,
            max_samples=MAX_SAMPLES,
        )
        try:
            await asyncio.to_thread(lab.start)
            # A slow link: acks reach the agent a second after the hub committed.
            proxy.delay(1.0)
            await wait_until_async(
                lambda: (get_json(lab.url + "/api/log?limit=50") or {}).get("entries") or None,
                "samples logged",
            )
            await asyncio.sleep(1.5)  # samples logged through the slow link, not a synchronisation
            assert lab.hub is not None
            await asyncio.to_thread(lab.hub.kill)  # the acks on their way die with it
            proxy.refuse(True)
            await proxy.reset()
            await wait_until_async(
                lambda: sum(g.count for g in spool_gaps(lab.spool_path)) >= MAX_SAMPLES or None,
                "the spool dropping samples",
                30.0,
            )
            outage_runs = set(spool_depth(lab.spool_path))
            await asyncio.to_thread(lab.start_hub)
            proxy.pass_through()
            proxy.refuse(False)

            def delivered() -> bool | None:
                held = spool_depth(lab.spool_path)
                pending = spool_gaps(lab.spool_path) or any(r in outage_runs for r in held)
                return None if pending else True

            assert lab.agent is not None
            await wait_until_async(delivered, "the backlog and gaps delivered", 40.0, lab.agent)
            assert await asyncio.to_thread(terminate, lab.agent) == 0, lab.outputs()
            assert await asyncio.to_thread(lab.hub.interrupt) == 0, lab.outputs()
        finally:
            await asyncio.to_thread(lab.stop)
    verdicts = check_delivery(read_hub_log(lab.log_path), spool=read_spool(lab.spool_path))
    assert verdicts.count("lost") == 0, verdicts.explain()
    assert not verdicts.gapped_but_logged and not verdicts.wrong_gaps, verdicts.explain()


@pytest.mark.timeout(60)
async def test_a_long_outage_past_the_limit_is_one_gap_per_instrument(tmp_path: Path) -> None:
    lab = StreamingLab(tmp_path, instruments=2, poll_interval_s=0.05, max_samples=20)
    try:
        await asyncio.to_thread(lab.start)
        assert lab.hub is not None
        await asyncio.to_thread(lab.hub.kill)
        # Drops at several commits: 2 instruments x 20 Hz, 20 kept, 0.5 s apart.
        await wait_until_async(
            lambda: sum(g.count for g in spool_gaps(lab.spool_path)) >= 150 or None,
            "the spool dropping samples for a while",
            30.0,
        )
        assert lab.agent is not None
        assert await asyncio.to_thread(terminate, lab.agent) == 0, lab.outputs()
    finally:
        await asyncio.to_thread(lab.stop)
    gaps = read_spool(lab.spool_path).gaps
    per_stream: dict[tuple[str, str], int] = {}
    for gap in gaps:
        per_stream[(gap.run, gap.instrument)] = per_stream.get((gap.run, gap.instrument), 0) + 1
    assert max(per_stream.values()) == 1, f"{len(gaps)} gaps: {per_stream}"
