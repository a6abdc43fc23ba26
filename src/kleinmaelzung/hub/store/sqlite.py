"""The SQLite traffic log: one writer thread commits batches, readers use their own connections.

The writer never stops on a bad batch: errors that may heal (a full disk, a
locked file) are retried with backoff, and anything SQLite will never accept
is found by halving the batch and dropped with an ERROR naming it. Should the
thread end anyway, `flush`, `close`, `append` and `wait_for_room` raise
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
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ...protocol import InstrumentInfo, LogEntry
from . import schema
from .base import KnownInstrument, OnCommitted, Record, StoreClosed, WriterFailed

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
#: Retrying a write that failed in a way that may heal: the first delay,
#: doubled per attempt up to the longest.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 5.0
#: Once closing, how long a failing write is retried before its rows are
#: given up (the agents still hold whatever was not acknowledged).
CLOSE_GRACE_S = 2.0

_info_decoder = msgspec.json.Decoder(InstrumentInfo)


@dataclass(frozen=True, slots=True)
class _SaveInstrument:
    id: str
    agent: str
    info: str
    last_seen: float | None

    def describe(self) -> str:
        return f"remembering instrument {self.id!r} of agent {self.agent!r}"


@dataclass(frozen=True, slots=True)
class _ForgetInstrument:
    id: str

    def describe(self) -> str:
        return f"forgetting instrument {self.id!r}"


#: What one transaction writes: log rows and changes to the known instruments.
_Item = Record | _SaveInstrument | _ForgetInstrument


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
        self._queue: queue.SimpleQueue[_Item | _Flush | _Stop] = queue.SimpleQueue()
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
        self.committed_rows = 0
        #: Rows dropped because SQLite refused them for good (see the ERROR log).
        self.dropped_rows = 0

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
            _SaveInstrument(info.id, agent, msgspec.json.encode(info).decode(), last_seen)
        )

    def forget_instrument(self, instrument_id: str) -> None:
        """Queue forgetting a remembered instrument; its logged traffic stays."""
        self._check_usable()
        self._queue.put(_ForgetInstrument(instrument_id))

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
            connection = sqlite3.connect(self.path, isolation_level=None)
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
        try:
            self._write_forever(connection)
        except BaseException as exc:  # the thread's top: nothing above it would say
            # A bug in the writer itself: every row error is handled below.
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

    def _write_forever(self, connection: sqlite3.Connection) -> None:
        while True:
            batch: list[_Item] = []
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
                self._write_batch(connection, batch)
            for marker in self._held:
                marker.resolve()
            self._held.clear()
            if stop:
                return

    def _write_batch(self, connection: sqlite3.Connection, batch: list[_Item]) -> None:
        dropped: list[_Item] = []
        committed = self._write(connection, batch, dropped)
        records = sum(isinstance(item, Record) for item in batch)
        with self._pending_lock:
            self._pending -= records
        if self._throttled and self._pending < self._low_water and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._make_room)
        if dropped:
            self.dropped_rows += sum(isinstance(item, Record) for item in dropped)
            _log.error(
                "traffic log dropped what it cannot write",
                extra={
                    "count": len(dropped),
                    "batch": len(batch),
                    "dropped": "; ".join(_describe(item) for item in dropped[:10]),
                },
            )
        self.committed_rows += sum(isinstance(item, Record) for item in committed)
        acks = _acks(committed)
        if acks and self._on_committed is not None and self._loop is not None:
            # RuntimeError: the loop has closed, nobody is left to acknowledge.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._on_committed, acks)

    def _write(
        self, connection: sqlite3.Connection, items: list[_Item], dropped: list[_Item]
    ) -> list[_Item]:
        """Commit `items`; return those committed, add those that never can be to `dropped`."""
        attempt = 0
        give_up_at: float | None = None
        while True:
            try:
                _transact(connection, items)
            except sqlite3.OperationalError as exc:
                # A full disk, a locked or read-only file: it may heal, so keep
                # the batch and retry; the agents keep unacknowledged samples
                # and are paused once the backlog reaches high water.
                attempt += 1
                if self._closing.is_set():
                    give_up_at = give_up_at or time.monotonic() + CLOSE_GRACE_S
                    if time.monotonic() >= give_up_at:
                        _log.error(
                            "traffic log closed with rows unwritten",
                            extra={"batch": len(items), "error": str(exc)},
                        )
                        dropped.extend(items)
                        return []
                delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempt - 1))
                if attempt & (attempt - 1) == 0:  # attempts 1, 2, 4, 8...: not a flood
                    _log.error(
                        "traffic log write failed; retrying",
                        extra={"batch": len(items), "attempt": attempt, "error": str(exc)},
                    )
                self._closing.wait(delay)
                continue
            except Exception as exc:
                # Not the file but the content: some item SQLite will never
                # take (a bug upstream). Halve the batch until it is found, so
                # that one bad row costs only itself, never the queue.
                if len(items) == 1:
                    _log.debug("item refused", extra={"error": repr(exc)})
                    dropped.append(items[0])
                    return []
                middle = len(items) // 2
                return self._write(connection, items[:middle], dropped) + self._write(
                    connection, items[middle:], dropped
                )
            if attempt:
                _log.warning("traffic log writes again", extra={"attempts": attempt})
            return items


def _transact(connection: sqlite3.Connection, items: list[_Item]) -> None:
    """Write items in one transaction, or not at all."""
    records = [item for item in items if isinstance(item, Record)]
    rows = [
        (r.ts, r.direction, r.peer, r.instrument, r.type, r.message.decode(), r.delivered_to)
        for r in records
    ]
    try:
        connection.execute("BEGIN")
        connection.executemany(schema.INSERT_TRAFFIC, rows)
        connection.executemany(schema.UPSERT_SEQ, _newest_seqs(records))
        for item in items:
            if isinstance(item, _SaveInstrument):
                connection.execute(
                    schema.UPSERT_INSTRUMENT, (item.id, item.agent, item.info, item.last_seen)
                )
            elif isinstance(item, _ForgetInstrument):
                connection.execute(schema.DELETE_INSTRUMENT, (item.id,))
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # keep the first error, not this one
                connection.execute("ROLLBACK")
        raise


def _newest_seqs(records: list[Record]) -> list[tuple[str, str, int]]:
    """The newest seq per instrument run among records, to commit with them."""
    newest: dict[str, tuple[str, int]] = {}
    for record in records:
        if record.ack is not None and record.run:
            for instrument, seq in record.ack[1].items():
                newest[instrument] = (record.run, seq)
    return [(instrument, run, seq) for instrument, (run, seq) in newest.items()]


def _acks(items: list[_Item]) -> dict[str, dict[str, int]]:
    """What to acknowledge after a commit: the highest seq per agent and instrument."""
    acks: dict[str, dict[str, int]] = {}
    for item in items:
        if isinstance(item, Record) and item.ack is not None:
            agent, seqs = item.ack
            agent_acks = acks.setdefault(agent, {})
            for instrument, seq in seqs.items():
                if seq > agent_acks.get(instrument, -1):
                    agent_acks[instrument] = seq
    return acks


def _describe(item: _Item) -> str:
    if isinstance(item, Record):
        return (
            f"{item.direction} {item.type} of {item.peer!r}"
            f" (instrument {item.instrument!r}, ts {item.ts!r}): {item.message[:120]!r}"
        )
    return item.describe()


def _yield_to_the_loop() -> None:
    """Lower the calling thread's priority; no-op where threads have none of their own."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
