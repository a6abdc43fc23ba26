"""The SQLite traffic log: one writer thread commits batches, readers use their own connections.

The writer never stops on a bad batch (`writer.BatchWriter`): errors that may
heal (a full disk, a locked file) are retried with backoff, and anything
SQLite will never accept is found by halving the batch and dropped with an
ERROR naming it. Should the thread end anyway, `flush`, `close`, `append` and `wait_for_room` raise
`WriterFailed` at once rather than wait forever.
"""

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

import msgspec

from ...protocol import InstrumentInfo, LogEntry
from . import schema
from .base import KnownInstrument, OnCommitted, Record, StoreClosed, WriterFailed
from .writer import BatchWriter, ForgetInstrument, Item, SaveInstrument, describe

_log = logging.getLogger(__name__)

#: Re-exported: the version this hub writes (see `schema` for the history).
SCHEMA_VERSION = schema.SCHEMA_VERSION

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

_info_decoder = msgspec.json.Decoder(InstrumentInfo)


class _Flush:
    """Marker: commit everything before me, then resolve `done`."""

    def __init__(self) -> None:
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def resolve(self, failure: BaseException | None = None) -> None:
        # The waiter may have been cancelled (a flush under a timeout), which
        # cancels this future: setting it then must not end the writer.
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if failure is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(failure)


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
        self._queue: queue.SimpleQueue[Item | _Flush | _Stop] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Set by close(): cuts a retry delay short.
        self._closing = threading.Event()
        #: Why the writer thread stopped; set before waiters are failed.
        self._failure: str | None = None
        #: Flush markers the writer has taken from the queue but not resolved.
        self._held: list[_Flush] = []
        self._writer: BatchWriter | None = None
        self.committed_rows = 0
        #: Rows dropped because SQLite refused them for good (see the ERROR log).
        self.dropped_rows = 0

    def set_on_committed(self, on_committed: OnCommitted) -> None:
        """Call `on_committed` after each commit that held records with an `ack`."""
        self._on_committed = on_committed

    async def open(self) -> None:
        """Create the file and schema (migrating an older one), then start the writer thread."""
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
        if self._closed or self._failure is not None:  # inline: this is per frame
            self._check_usable()
        with self._pending_lock:
            self._pending += 1
        self._queue.put(record)

    def save_instrument(
        self, info: InstrumentInfo, agent: str, last_seen: float | None = None
    ) -> None:
        """Queue remembering an instrument (committed with the next batch); never blocks.

        `last_seen` is the hub time of its newest reading, if the caller knows
        it; None keeps the stored time (announcing is not a reading).
        """
        self._check_usable()
        self._queue.put(
            SaveInstrument(info.id, agent, msgspec.json.encode(info).decode(), last_seen)
        )

    def forget_instrument(self, instrument_id: str) -> None:
        """Queue forgetting a remembered instrument; its logged traffic stays."""
        self._check_usable()
        self._queue.put(ForgetInstrument(instrument_id))

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise WriterFailed(self._failure)
        if self._closed:
            raise StoreClosed("traffic log is closed")

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
        if self._pending > self._high_water and not self._closed and self._failure is None:
            if first:  # once per pause, not once per agent
                _log.warning("traffic log behind; pausing agents", extra={"backlog": self._pending})
            await self._room.wait()
        self._throttled = False
        if self._failure is not None:
            raise WriterFailed(self._failure)

    def _make_room(self) -> None:
        self._throttled = False
        self._room.set()

    async def flush(self) -> None:
        """Wait until everything appended so far is committed (or dropped as unwritable)."""
        if self._failure is not None:
            raise WriterFailed(self._failure)
        marker = _Flush()
        self._queue.put(marker)
        # Put first, check second: the writer sets _failure first and fails
        # the queued markers second, so either it sees this marker or we see
        # the failure.
        if self._failure is not None:
            raise WriterFailed(self._failure)
        await asyncio.wrap_future(marker.done)

    async def close(self) -> None:
        """Commit what is queued and stop the writer thread; `WriterFailed` if it had stopped."""
        if self._closed or self._thread is None:
            self._closed = True
            return
        self._closed = True
        self._closing.set()
        self._make_room()
        self._queue.put(_Stop())
        await asyncio.to_thread(self._thread.join)
        if self._failure is not None:
            raise WriterFailed(self._failure)

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

    async def load_instruments(self) -> list[KnownInstrument]:
        """Every remembered instrument, sorted by id, with its newest reading's time."""
        return await asyncio.to_thread(self._load_instruments)

    def _load_instruments(self) -> list[KnownInstrument]:
        connection = sqlite3.connect(self.path)
        try:
            known = []
            for id_, agent, info_json, saved in connection.execute(schema.SELECT_INSTRUMENTS):
                try:
                    info = _info_decoder.decode(info_json)
                except msgspec.DecodeError as exc:
                    # Announced under another protocol version: the agent
                    # announces it again when it connects.
                    _log.warning(
                        "remembered instrument unreadable",
                        extra={"instrument": id_, "error": str(exc)},
                    )
                    continue
                newest = connection.execute(schema.NEWEST_READING, (id_,)).fetchone()
                times = [t for t in (saved, newest[0] if newest else None) if t is not None]
                known.append(KnownInstrument(info, agent, max(times) if times else None))
        finally:
            connection.close()
        return known

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
                message=msgspec.Raw(row[6].encode()),
                delivered_to=row[7],
            )
            for row in rows
        ]

    # --- the writer thread ---------------------------------------------------

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            # timeout: how long SQLite itself waits for a lock held by another
            # process; beyond that BatchWriter retries, and stops when closing.
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=1.0)
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed batch survives power loss, so an Ack to the
            # agent (which then forgets the samples) is a promise we keep.
            connection.execute("PRAGMA synchronous=FULL")
            schema.create(connection)
        except Exception as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        _yield_to_the_loop()
        self._writer = BatchWriter(connection, self._closing)
        try:
            self._write_forever()
        except BaseException as exc:  # the thread's top: nothing above it would say
            # A bug here: BatchWriter handles every error a batch can cause.
            _log.critical("traffic log writer stopped", exc_info=True)
            self._stop_for_good(f"traffic-log writer stopped: {exc!r}")
        finally:
            connection.close()

    def _stop_for_good(self, reason: str) -> None:
        """Fail every waiter at once instead of letting it wait forever."""
        self._failure = reason
        failure = WriterFailed(reason)
        for marker in self._held:
            marker.resolve(failure)
        self._held.clear()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Flush):
                item.resolve(failure)
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self._make_room)

    def _write_forever(self) -> None:
        while True:
            batch: list[Item] = []
            rows = 0
            stop = False
            item = self._queue.get()
            while True:
                if isinstance(item, _Stop):
                    stop = True
                elif isinstance(item, _Flush):
                    self._held.append(item)
                else:
                    batch.append(item)
                    rows += isinstance(item, Record)
                if stop or rows >= _BATCH_ROWS:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write_batch(batch, rows)
            for marker in self._held:
                marker.resolve()
            self._held.clear()
            if stop:
                return

    def _write_batch(self, batch: list[Item], records: int) -> None:
        assert self._writer is not None
        outcome = self._writer.write(batch)
        with self._pending_lock:
            self._pending -= records
        if self._throttled and self._pending < self._low_water and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._make_room)
        committed = records
        if outcome.dropped:
            lost = sum(isinstance(item, Record) for item, _ in outcome.dropped)
            committed -= lost
            self.dropped_rows += lost
            _log.error(
                "traffic log dropped what it cannot write",
                extra={
                    "count": len(outcome.dropped),
                    "batch": len(batch),
                    "dropped": "; ".join(
                        f"{describe(item)} [{reason}]" for item, reason in outcome.dropped[:10]
                    ),
                },
            )
        self.committed_rows += committed
        ack = outcome.acks
        if ack and self._on_committed is not None and self._loop is not None:
            # RuntimeError: the loop has closed, nobody is left to acknowledge.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._on_committed, ack)


def _yield_to_the_loop() -> None:
    """Lower the calling thread's priority; no-op where threads have none of their own."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
