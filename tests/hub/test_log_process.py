"""The traffic log written by a process of its own (`ProcessWriter`), on every backend.

The writer is a real process: these tests kill it with SIGKILL while records
stream in, and check that the hub restarts it, that every record is in the
log exactly once, and that nothing was acknowledged before it was committed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import threading
import time
from collections import Counter

from kleinmaelzung.hub import Record
from kleinmaelzung.hub.store import LogHealth, LogWriter
from kleinmaelzung.hub.store.committer import Committer
from kleinmaelzung.hub.store.process import ProcessWriter
from kleinmaelzung.protocol import Channel, InstrumentInfo

from .log_backends import LogPlace, log_place, postgres_url

__all__ = ["log_place", "postgres_url"]  # fixtures, used by name

INSTRUMENTS = ("kiln-air", "balance", "dmm")


def data(i: int) -> Record:
    """Data record `i`: one sample of one of three instruments, acknowledged by seq."""
    instrument = INSTRUMENTS[i % 3]
    seq = i // 3
    frame = (
        b'{"type":"data","run":"r1","samples":[{"instrument":"%s","seq":%d,"ts":%d.5,'
        b'"values":{"t":%d}}]}' % (instrument.encode(), seq, 1000 + i, i)
    )
    return Record(
        2000.0 + i,
        "in",
        "pi-1",
        "data",
        frame,
        instrument,
        None,
        ("pi-1/r1", {instrument: seq}),
        "r1",
    )


def writer(place: LogPlace, **options: object) -> ProcessWriter:
    return ProcessWriter(place.url, **options)  # type: ignore[arg-type]


async def until(condition: object, what: str, timeout: float = 20.0) -> None:
    """Wait (yielding to the loop) until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def logged_seqs(place: LogPlace) -> tuple[Counter[tuple[str, int]], Counter[tuple[str, int]]]:
    """How often each (instrument, seq) is in the traffic table and in the sample table."""
    seq = "CAST(json_extract(message, '$.samples[0].seq') AS INTEGER)"
    if place.kind == "postgresql":
        seq = "(message::jsonb->'samples'->0->>'seq')::int"
    traffic = await place.sql(f"SELECT instrument, {seq} FROM traffic WHERE type = 'data'")
    samples = await place.sql("SELECT instrument, seq FROM sample")
    return Counter(map(tuple, traffic)), Counter(map(tuple, samples))  # type: ignore[arg-type]


async def test_a_writer_process_commits_acknowledges_and_answers_queries(
    log_place: LogPlace,
) -> None:
    acks: list[dict[str, dict[str, int]]] = []
    store = writer(log_place, on_committed=acks.append)
    await store.open()
    assert store.writer_pid is not None and store.writer_pid != os.getpid()
    info = InstrumentInfo(id="kiln-air", kind="kiln", channels=[Channel(name="t", unit="C")])
    store.save_instrument(info, "pi-1")
    for i in range(2500):
        store.append(data(i))
    store.forget_instrument("ghost")
    await asyncio.wait_for(store.flush(), 20)
    assert store.backlog == 0
    assert store.committed_rows == 2500
    assert acks[-1] == {"pi-1/r1": {"kiln-air": 833, "balance": 832, "dmm": 832}}
    newest = await store.query(instrument="dmm", limit=2)
    assert [e.ts for e in newest] == [4498.0, 4495.0]
    samples = await store.query_samples("kiln-air", 1000.0, 1007.0)
    assert [(s.seq, s.values) for s in samples] == [(0, {"t": 0}), (1, {"t": 3}), (2, {"t": 6})]
    assert [k.id for k in await store.load_instruments()] == ["kiln-air"]
    assert await store.last_seqs("r1", INSTRUMENTS) == {"kiln-air": 833, "balance": 832, "dmm": 832}
    store.append(data(2500))
    await asyncio.wait_for(store.close(), 20)  # commits what is queued
    reopened = LogWriter(log_place.backend())
    await reopened.open()
    assert len(await reopened.query(limit=5000)) == 2501
    await reopened.close()


async def test_a_killed_writer_process_is_restarted_with_nothing_lost_or_logged_twice(
    log_place: LogPlace,
) -> None:
    acked: dict[str, int] = {}

    def on_committed(acks: dict[str, dict[str, int]]) -> None:
        for instrument, seq in acks["pi-1/r1"].items():
            assert seq >= acked.get(instrument, -1)
            acked[instrument] = seq

    store = writer(log_place, on_committed=on_committed)
    await store.open()
    appended = 0
    kills = 0
    # Under load: 30 records per loop iteration, a few thousand a second.
    while kills < 3:
        for _ in range(30):
            store.append(data(appended))
            appended += 1
        await asyncio.sleep(0.002)
        if store.committed_rows > (kills + 1) * 1500 and store.writer_pid is not None:
            pid = store.writer_pid
            acked_before = dict(acked)
            os.kill(pid, signal.SIGKILL)
            kills += 1
            # Whatever was acknowledged is in the log, before any restart.
            traffic, _ = await logged_seqs(log_place)
            for instrument, seq in acked_before.items():
                assert (instrument, seq) in traffic, (
                    f"acknowledged, not committed: {instrument} {seq}"
                )
            await until(lambda p=pid: store.writer_pid not in (None, p), "a new writer")  # type: ignore[misc]
    await asyncio.wait_for(store.flush(), 30)
    assert store.restarts == 3
    assert store.backlog == 0
    traffic, samples = await logged_seqs(log_place)
    expected = Counter((INSTRUMENTS[i % 3], i // 3) for i in range(appended))
    assert traffic == expected, "lost or logged twice in the traffic table"
    assert samples == expected, "lost or logged twice in the sample table"
    newest: dict[str, int] = {}
    for instrument, seq in expected:
        newest[instrument] = max(seq, newest.get(instrument, -1))
    assert acked == newest
    await store.close()


def _threads_policy(pid: int) -> set[int]:
    """The scheduling policy of every thread of process `pid`."""
    return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


async def _stopped_idle_writer(store: ProcessWriter) -> int:
    """Open `store`, wait until its writer is lowered to idle, stop it: a starved writer."""
    await store.open()
    idle = store.writer_pid
    assert idle is not None
    await until(lambda: _threads_policy(idle) == {os.SCHED_IDLE}, "the writer lowered")
    os.kill(idle, signal.SIGSTOP)
    return idle


async def test_a_writer_starts_at_nice_10_and_goes_idle_once_the_log_keeps_up(
    log_place: LogPlace,
) -> None:
    store = writer(log_place, idle_after_s=0.3, degraded_after_s=0.4)
    await store.open()
    pid = store.writer_pid
    assert pid is not None and store.writer_priority == "low"
    assert _threads_policy(pid) == {os.SCHED_OTHER}
    assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 10
    await until(lambda: store.writer_priority == "idle", "the writer lowered")
    # Every thread of the same process, the committing one included.
    await until(lambda: _threads_policy(pid) == {os.SCHED_IDLE}, "every thread idle")
    assert store.writer_pid == pid
    store.append(data(0))
    await asyncio.wait_for(store.flush(), 30)
    traffic, _ = await logged_seqs(log_place)
    assert traffic == Counter({(INSTRUMENTS[0], 0): 1})
    await store.close()


async def test_a_writer_starved_at_idle_priority_is_replaced_by_one_at_nice_10(
    log_place: LogPlace,
) -> None:
    # At SCHED_IDLE, commits never delay a sample the hub forwards; on a
    # machine whose every core is busy the writer would get no CPU at all.
    # A stopped process is what a starved one looks like.
    store = writer(
        log_place,
        low_water_rows=20,
        idle_after_s=0.2,
        starved_after_s=0.3,
        calm_after_s=0.6,
        degraded_after_s=0.4,
    )
    idle = await _stopped_idle_writer(store)
    for i in range(200):
        store.append(data(i))
    await until(lambda: store.writer_pid not in (None, idle), "a writer at nice 10")
    low = store.writer_pid
    assert low is not None and store.writer_priority == "low"
    assert _threads_policy(low) == {os.SCHED_OTHER}
    await asyncio.wait_for(store.flush(), 30)
    assert store.restarts == 0, "a replacement, not a crash"
    assert store.health.state == "ok"
    traffic, samples = await logged_seqs(log_place)
    expected = Counter((INSTRUMENTS[i % 3], i // 3) for i in range(200))
    assert traffic == expected and samples == expected, "lost or logged twice"
    # After the longer calm, the same process is lowered again.
    await until(lambda: _threads_policy(low) == {os.SCHED_IDLE}, "lowered again after a calm")
    assert store.writer_pid == low
    await store.close()


async def test_a_flush_waits_no_longer_than_the_lag_for_a_writer_starved_at_idle(
    log_place: LogPlace,
) -> None:
    # One record, far under low water: still, a writer at idle priority that
    # does not commit it in time is starved, and every flush (a calibration
    # capture, a resumed subscription) would wait for as long as it stays so.
    store = writer(log_place, idle_after_s=0.2, starved_lag_s=0.5, degraded_after_s=0.4)
    idle = await _stopped_idle_writer(store)
    store.append(data(0))
    await asyncio.wait_for(store.flush(), 10)  # forever, with the writer stopped, before
    assert store.writer_pid not in (None, idle) and store.writer_priority == "low"
    traffic, _ = await logged_seqs(log_place)
    assert traffic == Counter({(INSTRUMENTS[0], 0): 1})
    await store.close()


async def test_a_writer_that_lets_the_backlog_reach_high_water_at_idle_runs_at_nice_10(
    log_place: LogPlace,
) -> None:
    # A hub saturating its core pauses its agents at high water while the
    # writer, idle, catches up: at once at nice 10 instead, not after seconds.
    store = writer(
        log_place,
        high_water_rows=50,
        low_water_rows=10,
        idle_after_s=0.2,
        starved_after_s=3600,
        degraded_after_s=0.4,
    )
    idle = await _stopped_idle_writer(store)
    for i in range(100):
        store.append(data(i))
    paused = asyncio.ensure_future(store.wait_for_room())
    await until(lambda: store.writer_pid not in (None, idle), "a writer at nice 10")
    await asyncio.wait_for(paused, 30)
    await asyncio.wait_for(store.flush(), 30)
    traffic, _ = await logged_seqs(log_place)
    assert traffic == Counter((INSTRUMENTS[i % 3], i // 3) for i in range(100))
    await store.close()


async def test_a_hub_that_keeps_its_log_behind_keeps_its_writer_at_nice_10(
    log_place: LogPlace,
) -> None:
    # Never calm (S1 in benchmarks/run.py: the hub saturates its core): the
    # writer is never lowered, so never replaced either.
    store = writer(
        log_place, high_water_rows=50, low_water_rows=10, idle_after_s=0.3, degraded_after_s=0.4
    )
    await store.open()
    pid = store.writer_pid
    os.kill(pid, signal.SIGSTOP)  # type: ignore[arg-type]
    for i in range(100):
        store.append(data(i))
    paused = asyncio.ensure_future(store.wait_for_room())
    # Ten health checks (one every 0.1 s here), each with the log behind.
    checks = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, checks.set)
    await checks.wait()
    assert store.writer_priority == "low" and store.writer_pid == pid
    assert _threads_policy(pid) == {os.SCHED_OTHER}  # type: ignore[arg-type]
    os.kill(pid, signal.SIGCONT)  # type: ignore[arg-type]
    await asyncio.wait_for(paused, 30)
    await asyncio.wait_for(store.flush(), 30)
    await store.close()


async def test_a_commit_the_killed_writer_could_not_report_is_acknowledged_not_repeated(
    log_place: LogPlace,
) -> None:
    acks: list[dict[str, dict[str, int]]] = []
    store = writer(log_place, on_committed=acks.append)
    # The crash window, made certain: a writer of this hub's stream committed
    # its first 30 records, then died before it could say so.
    backend = log_place.backend()
    first = [dataclasses.replace(data(i), position=i) for i in range(30)]

    def commit_as_the_dead_writer() -> int:
        # One thread from open to close, as the writer's own (sqlite3 insists).
        backend.open()
        try:
            committer = Committer(backend, threading.Event(), writer=store.writer_id)
            return len(committer.commit(list(first)).committed)
        finally:
            backend.close()

    assert await asyncio.to_thread(commit_as_the_dead_writer) == 30
    await store.open()
    for i in range(35):  # the hub still holds them all: it sends them again
        store.append(data(i))
    await asyncio.wait_for(store.flush(), 20)
    traffic, samples = await logged_seqs(log_place)
    expected = Counter((INSTRUMENTS[i % 3], i // 3) for i in range(35))
    assert traffic == samples == expected
    assert store.committed_rows == 5  # only the new ones written
    # What its predecessor committed is acknowledged all the same.
    merged: dict[str, int] = {}
    for ack in acks:
        for instrument, seq in ack["pi-1/r1"].items():
            merged[instrument] = max(seq, merged.get(instrument, -1))
    assert merged == {"kiln-air": 11, "balance": 11, "dmm": 10}
    await store.close()


async def test_a_writer_process_that_cannot_write_degrades_the_log_and_recovers(
    log_place: LogPlace,
) -> None:
    changes: list[LogHealth] = []
    changed = asyncio.Event()

    def on_health(health: LogHealth) -> None:
        changes.append(health)
        changed.set()

    acks: list[dict[str, dict[str, int]]] = []
    store = writer(log_place, degraded_after_s=0.3, on_committed=acks.append, on_health=on_health)
    await store.open()
    async with log_place.writes_blocked():
        for i in range(20):
            store.append(data(i))
        await asyncio.wait_for(changed.wait(), 15)
        changed.clear()
        (degraded,) = changes
        assert f"traffic log {store.location} cannot be written: " in degraded.reason
        assert acks == []  # nothing acknowledged that is not committed
    await asyncio.wait_for(changed.wait(), 15)
    assert changes[1:] == [LogHealth()]
    await asyncio.wait_for(store.flush(), 15)
    assert acks[-1] == {"pi-1/r1": {"kiln-air": 6, "balance": 6, "dmm": 5}}
    await store.close()


async def test_a_record_the_writer_cannot_read_is_dropped_and_the_others_kept(
    log_place: LogPlace,
) -> None:
    store = writer(log_place)
    await store.open()
    store.append(data(0))
    # A bug elsewhere in the hub: a peer that is not text.
    store.append(dataclasses.replace(data(1), peer=["not", "text"]))  # type: ignore[arg-type]
    store.append(data(2))
    await asyncio.wait_for(store.flush(), 20)
    assert store.dropped_rows == 1
    assert store.committed_rows == 2
    assert [e.ts for e in await store.query(limit=10)] == [2002.0, 2000.0]
    await store.close()
