"""The agent's spool on a real SQLite file: kept until acknowledged, across restarts and kills."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kleinmaelzung.agent import Spool, SpoolError, SpoolLimits
from kleinmaelzung.protocol import Sample

DEADLINE_S = 10.0


def sample(instrument: str, seq: int, ts: float | None = None) -> Sample:
    when = time.time() if ts is None else ts
    return Sample(instrument=instrument, seq=seq, ts=when, values={"v": float(seq)})


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    opened = Spool(tmp_path / "spool.sqlite", run="a.0")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def reopened(path: Path, run: str = "b.0", **limits: float) -> Spool:
    again = Spool(path, run=run, limits=SpoolLimits(**limits))  # type: ignore[arg-type]
    await again.open()
    return again


async def drain_backlog(spool: Spool) -> list[tuple[str, int]]:
    sent: list[tuple[str, int]] = []
    while (batch := await spool.take_backlog(1000)) is not None:
        run, samples = batch
        sent += [(run, s.seq) for s in samples]
    return sent


async def test_what_is_not_acknowledged_survives_a_close_and_comes_back_as_backlog(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.sqlite"
    spool = await reopened(path, run="a.0")
    for seq in range(10):
        spool.put(sample("kiln-air", seq))
    spool.acknowledge("a.0", {"kiln-air": 3})
    await spool.close()

    again = await reopened(path)
    try:
        assert again.depth == 6
        await again.start_session("b.1")
        assert await drain_backlog(again) == [("a.0", s) for s in range(4, 10)]
    finally:
        await again.close()


async def test_a_sample_acknowledged_before_its_commit_is_never_written(spool: Spool) -> None:
    await spool.start_session("a.1")
    for seq in range(100):
        spool.put(sample("kiln-air", seq))
    assert [s.seq for s in spool.take_live(1000)] == list(range(100))
    spool.acknowledge("a.1", {"kiln-air": 89})
    await spool.commit(everything=True)
    assert spool.committed_rows == 10  # only the ten the hub has not logged yet
    spool.acknowledge("a.1", {"kiln-air": 99})
    await spool.commit()
    assert spool.committed_rows == 0 and spool.depth == 0


async def test_while_connected_young_samples_wait_for_their_ack_instead_of_the_disk(
    tmp_path: Path,
) -> None:
    # SD wear: a commit every 0.5 s wrote each sample (400 bytes per sample,
    # benchmarks/spool_io.py) although the hub acknowledges within 0.6 s.
    spool = await reopened(tmp_path / "spool.sqlite", run="a.0", hold_s=3600)
    try:
        for seq in range(5):
            spool.put(sample("kiln-air", seq))  # disconnected: written at once
        await spool.commit()
        assert spool.committed_rows == 5
        await spool.start_session("a.1")
        for seq in range(5, 10):
            spool.put(sample("kiln-air", seq))
        await spool.commit()
        assert spool.committed_rows == 5 and spool.depth == 10  # held, not lost
        spool.end_session()
        await spool.commit()  # the link went down: everything goes to the file
        assert spool.committed_rows == 10
    finally:
        await spool.close()


async def test_an_ack_applies_to_its_own_run_only(spool: Spool) -> None:
    for seq in range(5):
        spool.put(sample("kiln-air", seq))
    await spool.start_session("a.1")
    for seq in range(5):
        spool.put(sample("kiln-air", seq))
    # An ack for the new run's seqs must not make the spool forget the old run's.
    spool.acknowledge("a.1", {"kiln-air": 4})
    await spool.commit(everything=True)
    assert spool.depth == 5
    assert await drain_backlog(spool) == [("a.0", s) for s in range(5)]


async def test_backlog_and_live_are_separate_streams_each_in_order(spool: Spool) -> None:
    for seq in range(2500):
        spool.put(sample("kiln-air", seq))
    await spool.start_session("a.1")
    spool.put(sample("kiln-air", 2500))
    assert [s.seq for s in spool.take_live(1000)] == [2500]
    first = await spool.take_backlog(1000)
    assert first is not None and first[0] == "a.0" and len(first[1]) == 1000
    assert [s.seq for s in first[1]] == list(range(1000))
    rest = await drain_backlog(spool)
    assert [seq for _, seq in rest] == list(range(1000, 2500))
    assert not spool.sendable


async def test_a_full_spool_drops_the_oldest_and_names_exactly_what_it_dropped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.sqlite"
    spool = await reopened(path, run="a.0", max_samples=100)
    for seq in range(130):
        spool.put(sample("kiln-air", seq))
        spool.put(sample("balance", seq))
    await spool.commit()
    assert spool.committed_rows == 100
    assert spool.dropped == 160
    await spool.close()

    again = await reopened(path, max_samples=100)
    try:
        await again.start_session("b.1")
        gaps = again.take_gaps()
        assert {(g.instrument, g.run, g.first_seq, g.last_seq, g.count) for g in gaps} == {
            ("kiln-air", "a.0", 0, 79, 80),
            ("balance", "a.0", 0, 79, 80),
        }
        assert all("max_samples = 100" in g.reason for g in gaps)
        assert [s for _, s in await drain_backlog(again)] == [
            seq for seq in range(80, 130) for _ in ("kiln-air", "balance")
        ]
        # Told again after a reconnect until the hub acknowledges them.
        await again.start_session("b.2")
        assert len(again.take_gaps()) == 2
        again.acknowledge_gaps([g.id for g in gaps if g.id is not None])
        await again.commit()
    finally:
        await again.close()
    last = await reopened(path)
    try:
        await last.start_session("c.1")
        assert last.take_gaps() == []
    finally:
        await last.close()


async def test_samples_older_than_max_age_are_dropped_with_a_gap(tmp_path: Path) -> None:
    spool = await reopened(tmp_path / "spool.sqlite", run="a.0", max_age_s=3600)
    try:
        for seq in range(10):
            spool.put(sample("kiln-air", seq, ts=1.0))  # 1970: far older than an hour
        spool.put(sample("kiln-air", 10, ts=4e9))
        await spool.commit()
        assert spool.committed_rows == 1
        await spool.start_session("a.1")
        [gap] = spool.take_gaps()
        assert (gap.first_seq, gap.last_seq, gap.count) == (0, 9, 10)
        assert "max_age_s = 3600" in gap.reason
    finally:
        await spool.close()


async def test_two_agents_cannot_share_a_spool(spool: Spool) -> None:
    assert spool.path is not None
    other = Spool(spool.path, run="x.0")
    with pytest.raises(SpoolError, match=rf"spool {spool.path} is in use by agent process"):
        await other.open()


async def test_a_spool_written_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "spool.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(SpoolError, match="newer kleinmaelzung"):
        await Spool(path, run="a.0").open()


_WRITER = """
import asyncio, sys, time
from kleinmaelzung.agent import Spool
from kleinmaelzung.protocol import Sample

async def main():
    spool = Spool(sys.argv[1], run="killed.0")
    await spool.open()
    for seq in range(500):
        spool.put(Sample(instrument="kiln-air", seq=seq, ts=time.time(), values={"v": 1.0}))
    await spool.commit()
    spool.put(Sample(instrument="kiln-air", seq=500, ts=time.time(), values={"v": 1.0}))
    print("committed", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_kill_9_loses_nothing_that_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRITER, str(path), stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), DEADLINE_S)
        assert line.strip() == b"committed"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.wait_for(process.wait(), DEADLINE_S)
    again = await reopened(path)
    try:
        await again.start_session("b.1")
        # Seq 500 was taken after the last commit: that is what a kill can cost.
        assert await drain_backlog(again) == [("killed.0", s) for s in range(500)]
    finally:
        await again.close()
