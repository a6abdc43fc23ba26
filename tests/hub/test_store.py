"""The traffic log on every backend: batched, durable, acknowledges only what is committed.

Each test taking `log_place` runs on SQLite and on a real PostgreSQL server
(see log_backends.py for pointing it elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.hub import Record
from kleinmaelzung.hub.store import LogHealth, LogWriter, SqliteStore, StoreClosed, WriterFailed
from kleinmaelzung.hub.store.sqlite import SCHEMA_VERSION
from kleinmaelzung.protocol import Channel, InstrumentInfo

from .log_backends import LogPlace, log_place, postgres_url, sqlite_place

__all__ = ["log_place", "postgres_url", "sqlite_place"]  # fixtures, used by name


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


async def test_appended_records_are_committed_and_queryable(log_place: LogPlace) -> None:
    store = log_place.store()
    await store.open()
    for i in range(2500):
        store.append(record(i, "kiln-air" if i % 2 else "balance"))
    await store.flush()
    assert store.backlog == 0
    newest = await store.query(instrument="kiln-air", limit=3)
    assert [e.ts for e in newest] == [3499.0, 3497.0, 3495.0]
    assert all(e.instrument == "kiln-air" for e in newest)
    await store.close()
    # What a user with the database's own shell would see: the rows, readable JSON.
    ((count,),) = await log_place.sql("SELECT count(*) FROM traffic")
    ((message,),) = await log_place.sql("SELECT message FROM traffic LIMIT 1")
    assert count == 2500
    assert message.startswith('{"type":"data"')


async def test_acks_follow_commits_with_the_highest_seq(log_place: LogPlace) -> None:
    acks: list[dict[str, dict[str, int]]] = []
    got = asyncio.Event()

    def on_committed(batch: dict[str, dict[str, int]]) -> None:
        acks.append(batch)
        if batch["pi-1"].get("kiln-air") == 9:
            got.set()

    store = log_place.store(on_committed=on_committed)
    await store.open()
    for i in range(10):
        store.append(record(i, ack=True))
    await asyncio.wait_for(got.wait(), 5)
    seen = [a["pi-1"]["kiln-air"] for a in acks]
    assert seen == sorted(seen)
    entries = await store.query(limit=100)
    assert len(entries) == 10  # acknowledged means already readable from the log
    await store.close()


async def test_close_commits_everything_queued(log_place: LogPlace) -> None:
    store = log_place.store()
    await store.open()
    for i in range(1000):
        store.append(record(i))
    await store.close()
    reopened = log_place.store()
    await reopened.open()
    assert len(await reopened.query(limit=5000)) == 1000
    await reopened.close()


async def test_agents_wait_while_the_log_is_behind_and_nothing_is_lost(
    log_place: LogPlace,
) -> None:
    store = log_place.store(high_water_rows=100, low_water_rows=10)
    await store.open()
    # Another session holding the write lock: the writer cannot commit.
    async with log_place.writes_blocked():
        for i in range(500):
            store.append(record(i))
        waiting = asyncio.create_task(store.wait_for_room())
        done, _ = await asyncio.wait({waiting}, timeout=0.3)
        assert not done, "the hub must stop reading agents while the log is behind"
    await asyncio.wait_for(waiting, 5)
    assert store.backlog < 10
    await store.flush()
    assert len(await store.query(limit=1000)) == 500
    await store.close()


async def test_last_logged_seq_per_run_survives_a_restart(log_place: LogPlace) -> None:
    store = log_place.store()
    await store.open()
    for i in range(5):
        store.append(dataclasses.replace(record(i, ack=True), run="run-a"))
    store.append(dataclasses.replace(record(7, "balance", ack=True), run="run-a"))
    store.append(dataclasses.replace(record(3, "balance", ack=True), run="run-b"))
    await store.close()
    reopened = log_place.store()
    await reopened.open()
    # Each run's own: an agent sends spooled samples of earlier runs beside its current run's.
    assert await reopened.last_seqs("run-a", ["kiln-air", "balance", "other"]) == {
        "kiln-air": 4,
        "balance": 7,
    }
    assert await reopened.last_seqs("run-b", ["balance", "kiln-air"]) == {"balance": 3}
    await reopened.close()


async def test_a_row_the_database_cannot_store_is_dropped_and_the_writer_goes_on(
    log_place: LogPlace, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 8: any error but OperationalError ended the writer; flush() then hung."""
    store = log_place.store()
    await store.open()
    store.append(record(0))
    # A bug elsewhere in the hub: a peer name that is not text makes the
    # database driver refuse that row (sqlite3 InterfaceError, asyncpg TypeError).
    store.append(dataclasses.replace(record(1), peer=["not", "text"]))  # type: ignore[arg-type]
    store.append(record(2))
    await asyncio.wait_for(store.flush(), 5)
    assert [e.ts for e in await store.query(limit=10)] == [1002.0, 1000.0]
    assert store.dropped_rows == 1
    assert store.backlog == 0
    (dropped,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert dropped.getMessage() == "traffic log dropped what it cannot write"
    assert "['not', 'text']" in dropped.dropped and "ts 1001.0" in dropped.dropped
    # The writer still works for what comes next.
    store.append(record(3))
    await asyncio.wait_for(store.flush(), 5)
    assert len(await store.query(limit=10)) == 3
    await asyncio.wait_for(store.close(), 5)


class _WriterBug(BaseException):
    """What no handler in the writer expects: stands for a bug in the writer itself."""


class _CrashingWriter(LogWriter):
    """A writer whose thread dies on its first batch."""

    def _write_batch(self, batch: list[Any], records: int) -> None:
        raise _WriterBug("a bug in the writer")


async def test_a_dead_writer_fails_flush_close_and_append_at_once(log_place: LogPlace) -> None:
    store = _CrashingWriter(log_place.backend())
    await store.open()
    store.append(record(0))
    with pytest.raises(WriterFailed, match="a bug in the writer"):
        await asyncio.wait_for(store.flush(), 5)
    with pytest.raises(WriterFailed):
        store.append(record(1))
    with pytest.raises(WriterFailed):
        await asyncio.wait_for(store.flush(), 5)
    with pytest.raises(WriterFailed):
        await asyncio.wait_for(store.close(), 5)


async def test_a_flush_given_up_by_its_caller_does_not_stop_the_writer(
    log_place: LogPlace,
) -> None:
    store = log_place.store()
    await store.open()
    async with log_place.writes_blocked():  # the writer cannot commit for now
        store.append(record(0))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.flush(), 0.2)  # cancels the flush
    store.append(record(1))
    await asyncio.wait_for(store.flush(), 10)
    assert len(await store.query(limit=10)) == 2
    await asyncio.wait_for(store.close(), 5)


# --- known instruments (the hub remembers what it has seen) -----------------------


def info(id_: str, kind: str = "balance") -> InstrumentInfo:
    return InstrumentInfo(id=id_, kind=kind, channels=[Channel(name="mass", unit="g")])


async def test_known_instruments_survive_a_restart_and_can_be_forgotten(
    log_place: LogPlace,
) -> None:
    store = log_place.store()
    await store.open()
    store.save_instrument(info("balance"), "pi-1")
    store.save_instrument(info("kiln-air", "kiln"), "pi-1")
    store.save_instrument(info("ghost"), "pi-2")
    store.append(dataclasses.replace(record(5, "kiln-air"), ts=1234.5))  # a reading
    store.forget_instrument("ghost")
    await store.close()
    reopened = log_place.store()
    await reopened.open()
    known = await reopened.load_instruments()
    assert [(k.id, k.agent, k.last_seen) for k in known] == [
        ("balance", "pi-1", None),  # announced, never read: no last_seen
        ("kiln-air", "pi-1", 1234.5),
    ]
    assert known[1].info == info("kiln-air", "kiln")
    # Announced again by another agent: the newest announcement wins, and
    # announcing does not erase a time the hub saved.
    reopened.save_instrument(info("balance"), "pi-3", last_seen=2000.0)
    reopened.save_instrument(info("balance", "scale"), "pi-3")
    await reopened.flush()
    (balance, _) = await reopened.load_instruments()
    assert (balance.agent, balance.info.kind, balance.last_seen) == ("pi-3", "scale", 2000.0)
    await reopened.close()


async def test_saving_an_instrument_waits_for_nothing_but_commits_with_the_next_batch(
    log_place: LogPlace,
) -> None:
    store = log_place.store()
    await store.open()
    async with log_place.writes_blocked():  # the writer cannot commit for now
        loop = asyncio.get_running_loop()
        started = loop.time()
        store.save_instrument(info("balance"), "pi-1")
        store.forget_instrument("kiln-air")
        assert loop.time() - started < 0.05  # queued, not written on the loop
        assert store.backlog == 0  # not traffic: never pauses agents
    await asyncio.wait_for(store.flush(), 10)
    assert [k.id for k in await store.load_instruments()] == ["balance"]
    await store.close()
    with pytest.raises(StoreClosed):
        store.save_instrument(info("balance"), "pi-1")


async def test_closing_gives_up_on_a_log_that_stays_locked(
    log_place: LogPlace, caplog: pytest.LogCaptureFixture
) -> None:
    store = log_place.store()
    await store.open()
    # Say, someone left the database's shell in a transaction.
    async with log_place.writes_blocked():
        store.append(record(0, ack=True))
        # Shutdown ends: the agent still holds the unacknowledged sample.
        await asyncio.wait_for(store.close(), 10)
    assert store.dropped_rows == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "traffic log write failed; retrying" in errors
    assert "traffic log dropped what it cannot write" in errors


# --- files written by older hubs --------------------------------------------------

_V1 = """
CREATE TABLE traffic (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    peer TEXT NOT NULL,
    instrument TEXT,
    type TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX traffic_instrument ON traffic (instrument, id);
"""
_V2 = _V1.replace("message TEXT NOT NULL\n", "message TEXT NOT NULL,\n    delivered_to TEXT\n")
_V3 = (
    _V2
    + "CREATE TABLE instrument_seq (instrument TEXT PRIMARY KEY, run TEXT NOT NULL,"
    + " seq INTEGER NOT NULL);\n"
)
# Version 4, as the hubs before the sample table wrote it.
_V4 = (
    _V3
    + "CREATE TABLE known_instrument (id TEXT PRIMARY KEY, agent TEXT NOT NULL,"
    + " info TEXT NOT NULL, last_seen REAL);\n"
)
# Version 5 added the sample table (the file's data rows filled in below).
_V5 = (
    _V4
    + "CREATE TABLE sample (instrument TEXT NOT NULL, run TEXT, seq INTEGER NOT NULL,"
    + " ts REAL NOT NULL, received REAL NOT NULL, channel_values TEXT NOT NULL);\n"
    + "CREATE INDEX sample_instrument_ts ON sample (instrument, ts);\n"
)
_HELLO = (
    '{"type":"agent_hello","protocol":1,"agent_id":"pi-1","run":"r1","instruments":'
    '[{"id":"balance","kind":"balance","channels":[{"name":"mass","unit":"g"}]},'
    '{"id":"kiln-air","kind":"kiln"}]}'
)
_DATA = (
    '{"type":"data","samples":[{"instrument":"balance","seq":7,"ts":99.0,"values":{"mass":1.5}}]}'
)


def write_old_log(path: Path, version: int) -> None:
    """A traffic log as a hub of `version` left it: a hello, a reading, a refused frame."""
    script = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5}[version]
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.executescript(script)
        if version > 1:  # version 1 never set it
            connection.execute(f"PRAGMA user_version = {version}")
        rows = [
            (10.0, "in", "pi-1", None, "agent_hello", _HELLO),
            (11.0, "in", "pi-1", "balance", "data", _DATA),
            # How hubs before version 4 logged refused input: a JSON string.
            (12.0, "in", "client-1/typist", None, "error", '"{not json"'),
        ]
        connection.executemany(
            "INSERT INTO traffic (ts, direction, peer, instrument, type, message)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        if version >= 3:
            connection.execute("INSERT INTO instrument_seq VALUES ('balance', 'r1', 7)")
        if version >= 4:  # what version 4 seeded from the hello
            connection.execute(
                "INSERT INTO known_instrument VALUES ('balance', 'pi-1', ?, NULL),"
                ' (\'kiln-air\', \'pi-1\', \'{"id":"kiln-air","kind":"kiln"}\', NULL)',
                ('{"id":"balance","kind":"balance","channels":[{"name":"mass","unit":"g"}]}',),
            )
        if version >= 5:
            connection.execute(
                "INSERT INTO sample VALUES ('balance', NULL, 7, 99.0, 11.0, '{\"mass\":1.5}')"
            )


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
async def test_a_log_of_an_older_hub_is_upgraded_in_place(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.sqlite3"
    write_old_log(path, version)
    store = SqliteStore(path)
    await store.open()
    old = await store.query(limit=10)
    assert [e.type for e in old] == ["error", "data", "agent_hello"]
    assert old[0].message_object() == {"frame": "{not json"}  # still readable
    assert old[1].message_object()["samples"][0]["seq"] == 7
    # The instruments the old log announced are remembered, with their newest reading.
    known = await store.load_instruments()
    assert [(k.id, k.agent, k.last_seen) for k in known] == [
        ("balance", "pi-1", 11.0),
        ("kiln-air", "pi-1", None),
    ]
    assert known[0].info.channels == [Channel(name="mass", unit="g")]
    if version >= 3:
        assert await store.last_seqs("r1", ["balance"]) == {"balance": 7}
    # The samples the old log holds are in the sample table, their run unknown.
    (old_sample,) = await store.query_samples("balance", 0.0, 1000.0)
    assert (old_sample.run, old_sample.seq, old_sample.ts, old_sample.received) == (
        None,
        7,
        99.0,
        11.0,
    )
    assert old_sample.values == {"mass": 1.5}
    # New rows and features work on the upgraded file.
    store.append(dataclasses.replace(record(20, "balance"), delivered_to="client-2/watch"))
    store.forget_instrument("kiln-air")
    await store.flush()
    (newest, *_) = await store.query(limit=1)
    assert (newest.ts, newest.delivered_to) == (1020.0, "client-2/watch")
    assert [k.id for k in await store.load_instruments()] == ["balance"]
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        (user_version,) = connection.execute("PRAGMA user_version").fetchone()
    assert user_version == SCHEMA_VERSION == 10
    # Opening again changes nothing: the upgrade ran once.
    again = SqliteStore(path)
    await again.open()
    assert [k.id for k in await again.load_instruments()] == ["balance"]
    assert len(await again.query(limit=10)) == 4
    await again.close()


# --- health: a log that cannot keep up says so ------------------------------------


async def test_a_log_that_cannot_write_turns_degraded_and_recovers_with_nothing_lost(
    log_place: LogPlace,
) -> None:
    changes: list[LogHealth] = []
    changed = asyncio.Event()

    def on_health(health: LogHealth) -> None:
        changes.append(health)
        changed.set()

    acks: list[dict[str, dict[str, int]]] = []
    store = log_place.store(degraded_after_s=0.3, on_committed=acks.append)
    store.set_on_health(on_health)
    await store.open()
    assert store.health == LogHealth()
    async with log_place.writes_blocked():  # a full disk, a server that is down
        for i in range(20):
            store.append(record(i, ack=True))
        await asyncio.wait_for(changed.wait(), 10)
        changed.clear()
        (degraded,) = changes
        assert degraded.state == "degraded"
        assert f"traffic log {store.location} cannot be written: " in degraded.reason
        assert store.health == degraded
        assert acks == []  # nothing acknowledged that is not committed
    await asyncio.wait_for(changed.wait(), 10)
    assert changes[1:] == [LogHealth()]
    await store.flush()
    assert len(await store.query(limit=100)) == 20
    assert acks[-1] == {"pi-1": {"kiln-air": 19}}
    await store.close()


async def test_a_log_behind_high_water_for_too_long_turns_degraded(log_place: LogPlace) -> None:
    changed = asyncio.Event()
    store = log_place.store(
        high_water_rows=5, low_water_rows=2, degraded_after_s=0.2, on_health=lambda _: changed.set()
    )
    await store.open()
    async with log_place.writes_blocked():
        for i in range(10):
            store.append(record(i))
        await asyncio.wait_for(changed.wait(), 10)
        assert store.health.state == "degraded"
        # Before any write failed for long: the backlog is what is reported.
        assert "is behind: 10 rows wait to be written" in store.health.reason
    await store.flush()
    await store.close()
