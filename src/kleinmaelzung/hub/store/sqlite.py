"""The SQLite traffic log: one writer thread commits batches, readers use their own connections."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import sqlite3
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from .base import LogEntry, OnCommitted, Record

_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS traffic (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    peer TEXT NOT NULL,
    instrument TEXT,
    type TEXT NOT NULL,
    message TEXT NOT NULL,
    delivered_to TEXT
);
CREATE INDEX IF NOT EXISTS traffic_instrument ON traffic (instrument, id);
-- The newest logged seq per instrument and its agent run, committed with the
-- rows: samples an agent sends again after a hub restart are not logged twice.
CREATE TABLE IF NOT EXISTS instrument_seq (
    instrument TEXT PRIMARY KEY,
    run TEXT NOT NULL,
    seq INTEGER NOT NULL
);
"""
_UPSERT_SEQ = """
INSERT INTO instrument_seq (instrument, run, seq) VALUES (?, ?, ?)
ON CONFLICT (instrument) DO UPDATE SET run = excluded.run, seq = excluded.seq
"""
#: Bumped with every schema change; `_migrate` brings older files up to date.
SCHEMA_VERSION = 3

#: Rows per transaction at most; larger backlogs commit in several batches.
_BATCH_ROWS = 5000
#: Backlog at which agents are no longer read from, and at which they are
#: read again: with the writer at a lower priority, this is what keeps the
#: log from falling behind without bound when the CPU is saturated.
HIGH_WATER_ROWS = 20_000
LOW_WATER_ROWS = 5_000
#: The writer's nice value relative to the hub (Linux, per thread): SQLite's
#: page writing must not take the core from the loop while a sample waits to
#: be forwarded. S2x p99 in benchmarks/run.py: 2.0-2.4 ms at 0, 1.1-1.4 at 10.
WRITER_NICE = 10


class _Flush:
    """Marker: commit everything before me, then resolve `done`."""

    def __init__(self) -> None:
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()


class _Stop:
    """Marker: commit everything before me, then end the writer thread."""


class SqliteStore:
    """Append-only traffic log in one SQLite file (WAL), written in batches off the loop."""

    def __init__(
        self,
        path: Path,
        *,
        on_committed: OnCommitted | None = None,
        high_water_rows: int = HIGH_WATER_ROWS,
        low_water_rows: int = LOW_WATER_ROWS,
    ) -> None:
        self.path = path
        self._on_committed = on_committed
        self._high_water = high_water_rows
        self._low_water = low_water_rows
        self._room = asyncio.Event()
        self._room.set()
        self._throttled = False
        self._queue: queue.SimpleQueue[Record | _Flush | _Stop] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.committed_rows = 0

    async def open(self) -> None:
        """Create the file and schema, then start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="kmz-traffic-writer", daemon=True
        )
        self._thread.start()
        await asyncio.wrap_future(ready)

    def append(self, record: Record) -> None:
        """Queue a record for writing; never blocks the event loop."""
        if self._closed:
            raise RuntimeError("traffic log is closed")
        with self._pending_lock:
            self._pending += 1
        self._queue.put(record)

    @property
    def backlog(self) -> int:
        """Records appended but not yet committed."""
        return self._pending

    async def wait_for_room(self) -> None:
        """Return at once unless the backlog is over high water; then wait for low water."""
        if self._pending <= self._high_water:
            return
        # Throttled first, backlog checked second: the writer decrements
        # first and checks second, so one of the two sees the other.
        first = not self._throttled
        self._throttled = True
        self._room.clear()
        if self._pending > self._high_water and not self._closed:
            if first:  # once per pause, not once per agent
                _log.warning("traffic log behind; pausing agents", extra={"backlog": self._pending})
            await self._room.wait()
        self._throttled = False

    def _make_room(self) -> None:
        self._throttled = False
        self._room.set()

    async def flush(self) -> None:
        """Wait until everything appended so far is committed."""
        marker = _Flush()
        self._queue.put(marker)
        await asyncio.wrap_future(marker.done)

    async def close(self) -> None:
        """Commit what is queued and stop the writer thread."""
        if self._closed or self._thread is None:
            self._closed = True
            return
        self._closed = True
        self._make_room()
        self._queue.put(_Stop())
        await asyncio.to_thread(self._thread.join)

    async def last_seqs(self, run: str, instruments: Iterable[str]) -> dict[str, int]:
        """The highest committed seq of each instrument in this agent run."""
        return await asyncio.to_thread(self._last_seqs, run, list(instruments))

    def _last_seqs(self, run: str, instruments: list[str]) -> dict[str, int]:
        connection = sqlite3.connect(self.path)
        try:
            rows = connection.execute(
                "SELECT instrument, seq FROM instrument_seq WHERE run = ?", (run,)
            ).fetchall()
        finally:
            connection.close()
        wanted = set(instruments)
        return {instrument: seq for instrument, seq in rows if instrument in wanted}

    async def query(self, *, instrument: str | None = None, limit: int = 100) -> list[LogEntry]:
        """Return the newest entries, newest first."""
        return await asyncio.to_thread(self._query, instrument, limit)

    def _query(self, instrument: str | None, limit: int) -> list[LogEntry]:
        connection = sqlite3.connect(self.path)
        try:
            sql = (
                "SELECT id, ts, direction, peer, instrument, type, message, delivered_to"
                " FROM traffic"
            )
            params: tuple[object, ...] = ()
            if instrument is not None:
                sql += " WHERE instrument = ?"
                params = (instrument,)
            sql += " ORDER BY id DESC LIMIT ?"
            rows = connection.execute(sql, (*params, limit)).fetchall()
        finally:
            connection.close()
        return [
            LogEntry(
                id=row[0],
                ts=row[1],
                direction=row[2],
                peer=row[3],
                instrument=row[4],
                type=row[5],
                message=row[6].encode(),
                delivered_to=row[7],
            )
            for row in rows
        ]

    # --- the writer thread ---------------------------------------------------

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed batch survives power loss, so an Ack to the
            # agent (which then forgets the samples) is a promise we keep.
            connection.execute("PRAGMA synchronous=FULL")
            connection.executescript(_SCHEMA)
            _migrate(connection)
        except Exception as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        _yield_to_the_loop()
        try:
            self._write_forever(connection)
        finally:
            connection.close()

    def _write_forever(self, connection: sqlite3.Connection) -> None:
        while True:
            batch: list[Record] = []
            markers: list[_Flush] = []
            stop = False
            item = self._queue.get()
            while True:
                if isinstance(item, _Stop):
                    stop = True
                elif isinstance(item, _Flush):
                    markers.append(item)
                else:
                    batch.append(item)
                if stop or len(batch) >= _BATCH_ROWS:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit(connection, batch)
            for marker in markers:
                marker.done.set_result(None)
            if stop:
                return

    def _commit(self, connection: sqlite3.Connection, batch: list[Record]) -> None:
        rows = [
            (r.ts, r.direction, r.peer, r.instrument, r.type, r.message.decode(), r.delivered_to)
            for r in batch
        ]
        # One pass for both: what to acknowledge after the commit, and the
        # newest seq per instrument run to commit with the rows.
        acks: dict[str, dict[str, int]] = {}
        newest: dict[str, tuple[str, int]] = {}
        for record in batch:
            if record.ack is None:
                continue
            agent, seqs = record.ack
            agent_acks = acks.setdefault(agent, {})
            for instrument, seq in seqs.items():
                if seq > agent_acks.get(instrument, -1):
                    agent_acks[instrument] = seq
                if record.run:
                    newest[instrument] = (record.run, seq)
        seq_rows = [(instrument, run, seq) for instrument, (run, seq) in newest.items()]
        while True:
            try:
                connection.execute("BEGIN")
                connection.executemany(
                    "INSERT INTO traffic (ts, direction, peer, instrument, type, message,"
                    " delivered_to) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                connection.executemany(_UPSERT_SEQ, seq_rows)
                connection.execute("COMMIT")
                break
            except sqlite3.OperationalError:
                # A full disk or a locked file: keep the batch and retry, so
                # nothing is dropped; the agents keep unacknowledged samples.
                _log.exception("traffic log write failed; retrying in 1 s")
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                threading.Event().wait(1.0)
        with self._pending_lock:
            self._pending -= len(batch)
        if self._throttled and self._pending < self._low_water and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._make_room)
        self.committed_rows += len(batch)
        if acks and self._on_committed is not None and self._loop is not None:
            # RuntimeError: the loop has closed, nobody is left to acknowledge.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._on_committed, acks)


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring a traffic log written by an older hub up to SCHEMA_VERSION."""
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    columns = {row[1] for row in connection.execute("PRAGMA table_info(traffic)")}
    if "delivered_to" not in columns:  # version 1 logged every delivery as its own row
        connection.execute("ALTER TABLE traffic ADD COLUMN delivered_to TEXT")
    if version < SCHEMA_VERSION:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _yield_to_the_loop() -> None:
    """Lower the calling thread's priority; no-op where threads have none of their own."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
