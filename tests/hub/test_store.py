"""The SQLite traffic log: batched, durable, acknowledges only what is committed."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
from pathlib import Path

import pytest

from kleinmaelzung.hub import Record, SqliteStore


def record(i: int, instrument: str = "kiln-air", ack: bool = False) -> Record:
    return Record(
        ts=1000.0 + i,
        direction="in",
        peer="pi-1",
        type="data",
        message=b'{"type":"data","samples":[]}',
        instrument=instrument,
        ack=("pi-1", {instrument: i}) if ack else None,
    )


async def test_appended_records_are_committed_and_queryable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.sqlite3")
    await store.open()
    for i in range(2500):
        store.append(record(i, "kiln-air" if i % 2 else "balance"))
    await store.flush()
    assert store.backlog == 0
    newest = await store.query(instrument="kiln-air", limit=3)
    assert [e.ts for e in newest] == [3499.0, 3497.0, 3495.0]
    assert all(e.instrument == "kiln-air" for e in newest)
    await store.close()
    # What a user with the sqlite3 shell would see: the same rows, readable JSON.
    with sqlite3.connect(tmp_path / "t.sqlite3") as connection:
        (count,) = connection.execute("SELECT count(*) FROM traffic").fetchone()
        (message,) = connection.execute("SELECT message FROM traffic LIMIT 1").fetchone()
    assert count == 2500
    assert message.startswith('{"type":"data"')


async def test_acks_follow_commits_with_the_highest_seq(tmp_path: Path) -> None:
    acks: list[dict[str, dict[str, int]]] = []
    got = asyncio.Event()

    def on_committed(batch: dict[str, dict[str, int]]) -> None:
        acks.append(batch)
        if batch["pi-1"].get("kiln-air") == 9:
            got.set()

    store = SqliteStore(tmp_path / "t.sqlite3", on_committed=on_committed)
    await store.open()
    for i in range(10):
        store.append(record(i, ack=True))
    await asyncio.wait_for(got.wait(), 5)
    seen = [a["pi-1"]["kiln-air"] for a in acks]
    assert seen == sorted(seen)
    entries = await store.query(limit=100)
    assert len(entries) == 10  # acknowledged means already readable from the file
    await store.close()


async def test_close_commits_everything_queued(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.sqlite3")
    await store.open()
    for i in range(1000):
        store.append(record(i))
    await store.close()
    reopened = SqliteStore(tmp_path / "t.sqlite3")
    await reopened.open()
    assert len(await reopened.query(limit=5000)) == 1000
    await reopened.close()


async def test_agents_wait_while_the_log_is_behind_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    store = SqliteStore(path, high_water_rows=100, low_water_rows=10)
    await store.open()
    # Another process holding the write lock: the writer cannot commit.
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    for i in range(500):
        store.append(record(i))
    waiting = asyncio.create_task(store.wait_for_room())
    done, _ = await asyncio.wait({waiting}, timeout=0.3)
    assert not done, "the hub must stop reading agents while the log is behind"
    blocker.execute("COMMIT")
    blocker.close()
    await asyncio.wait_for(waiting, 5)
    assert store.backlog < 10
    await store.flush()
    assert len(await store.query(limit=1000)) == 500
    await store.close()


async def test_last_logged_seq_per_run_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    store = SqliteStore(path)
    await store.open()
    for i in range(5):
        store.append(dataclasses.replace(record(i, ack=True), run="run-a"))
    store.append(dataclasses.replace(record(7, "balance", ack=True), run="run-a"))
    store.append(dataclasses.replace(record(3, "balance", ack=True), run="run-b"))
    await store.close()
    reopened = SqliteStore(path)
    await reopened.open()
    # The balance's newest run is b: seqs of run a no longer say anything about it.
    assert await reopened.last_seqs("run-a", ["kiln-air", "balance", "other"]) == {"kiln-air": 4}
    assert await reopened.last_seqs("run-b", ["balance"]) == {"balance": 3}
    await reopened.close()


async def test_a_row_sqlite_cannot_store_is_dropped_and_the_writer_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 8: any error but OperationalError ended the writer; flush() then hung."""
    store = SqliteStore(tmp_path / "t.sqlite3")
    await store.open()
    store.append(record(0))
    # A bug elsewhere in the hub: a peer name that is not text makes sqlite3
    # raise InterfaceError (ProgrammingError on newer Pythons) for that row.
    store.append(dataclasses.replace(record(1), peer=["not", "text"]))  # type: ignore[arg-type]
    store.append(record(2))
    await asyncio.wait_for(store.flush(), 5)
    assert [e.ts for e in await store.query(limit=10)] == [1002.0, 1000.0]
    assert store.dropped_rows == 1
    assert store.backlog == 0
    dropped = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert dropped and "kiln-air" in dropped[0].getMessage() + str(dropped[0].__dict__)
    # The writer still works for what comes next.
    store.append(record(3))
    await asyncio.wait_for(store.flush(), 5)
    assert len(await store.query(limit=10)) == 3
    await asyncio.wait_for(store.close(), 5)
