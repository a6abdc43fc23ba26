"""The traffic log's writer: one thread commits batches through any `LogBackend`.

`LogWriter` is the hub's `Store`. It owns what every backend needs the same:
the queue, batching, backpressure (high and low water), flush markers, the
newest-seq bookkeeping and the callback that turns commits into acks. The
writer never stops on a bad batch (`committer.Committer`): errors that may
heal (a full disk, a locked file, a database that is down) are retried with
backoff, and anything the backend will never accept is found by halving the
batch and dropped with an ERROR naming it. Should the thread end anyway,
`flush`, `close`, `append` and `wait_for_room` raise `WriterFailed` at once
rather than wait forever.

The writer also says whether the log keeps up (`health`, by the rule in
`health.HealthWatch`).

`process.ProcessWriter` is the same `Store` with the writing done in a
process of its own (what `kmz hub` runs); this thread writer serves hubs
embedded in other programs and tests, and the writer process itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import sys
import threading
from typing import TypedDict

import msgspec

from ...protocol import InstrumentInfo
from .backend import BackendReads, LogBackend
from .base import (
    LogHealth,
    OnCommitted,
    OnHealth,
    Record,
    StoreClosed,
    StoreUnavailable,
    WriterFailed,
)
from .batch import ForgetInstrument, Item, SaveInstrument, describe
from .committer import Committer
from .health import HealthWatch

_log = logging.getLogger(__name__)

#: Rows per transaction at most; larger backlogs commit in several batches.
BATCH_ROWS = 5000
#: Backlog at which agents are no longer read from, and at which they are
#: read again: with the writer at a lower priority, this is what keeps the
#: log from falling behind without bound when the CPU is saturated.
HIGH_WATER_ROWS = 20_000
LOW_WATER_ROWS = 5_000
#: The writer's nice value relative to the hub (Linux, per thread): the
#: database work must not take the core from the loop while a sample waits to
#: be forwarded. S2x p99 in benchmarks/run.py: 2.0-2.4 ms at 0, 1.1-1.4 at 10.
WRITER_NICE = 10
#: How long writes may fail, or the backlog stay over high water, before the
#: log counts as degraded: long enough for a lock or a server restart.
DEGRADED_AFTER_S = 10.0


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


class WriterOptions(TypedDict, total=False):
    """`LogWriter`'s keyword arguments, for the stores that build one over their backend."""

    on_committed: OnCommitted | None
    high_water_rows: int
    low_water_rows: int
    degraded_after_s: float
    on_health: OnHealth | None


class LogWriter(BackendReads):
    """Append-only traffic log over a backend, written in batches off the loop."""

    def __init__(
        self,
        backend: LogBackend,
        *,
        on_committed: OnCommitted | None = None,
        high_water_rows: int = HIGH_WATER_ROWS,
        low_water_rows: int = LOW_WATER_ROWS,
        degraded_after_s: float = DEGRADED_AFTER_S,
        on_health: OnHealth | None = None,
    ) -> None:
        self.backend = backend
        self._on_committed = on_committed
        self._high_water = high_water_rows
        self._low_water = low_water_rows
        self._watch = HealthWatch(
            backend.location,
            high_water_rows=high_water_rows,
            low_water_rows=low_water_rows,
            degraded_after_s=degraded_after_s,
            on_health=on_health,
        )
        self._health_task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._throttled = False
        self._queue: queue.SimpleQueue[Item | _Flush | _Stop] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._reading = False
        self._closed = False
        #: Set by close(): cuts a retry delay short.
        self._closing = threading.Event()
        #: Why the writer thread stopped; set before waiters are failed.
        self._failure: str | None = None
        #: Flush markers the writer has taken from the queue but not resolved.
        self._held: list[_Flush] = []
        self._committer = Committer(backend, self._closing)
        self.committed_rows = 0
        #: Rows dropped because the backend refused them for good (see the ERROR log).
        self.dropped_rows = 0

    @property
    def location(self) -> str:
        """Where the log is: a path, or a URL without its password."""
        return self.backend.location

    def set_on_committed(self, on_committed: OnCommitted) -> None:
        """Call `on_committed` after each commit that held records with an `ack`."""
        self._on_committed = on_committed

    def set_on_health(self, on_health: OnHealth) -> None:
        """Call `on_health` (on the loop) whenever the log turns degraded or ok again."""
        self._watch.on_health = on_health

    @property
    def health(self) -> LogHealth:
        """Whether the log keeps up, and if not why (checked every second or so)."""
        return self._watch.health

    async def open(self) -> None:
        """Open the backend (creating or upgrading its schema), then start the writer thread.

        Raises `StoreUnavailable`, naming the log, if the backend cannot be opened.
        """
        self._loop = asyncio.get_running_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="kmz-traffic-writer", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
            await self.backend.start_reading()
        except Exception as exc:
            self._closed = True
            self._queue.put(_Stop())
            await asyncio.to_thread(self._thread.join)
            raise StoreUnavailable(
                f"cannot open the traffic log {self.location}: {exc or type(exc).__name__}"
            ) from exc
        self._reading = True
        self._health_task = asyncio.create_task(self._watch_health(), name="kmz-log-health")

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
        """Return at once unless the backlog is over high water; then wait for low water.

        Also at once, and for those waiting, once the log is degraded: the
        hub then forwards samples without logging them (`handlers`).
        """
        if self._pending <= self._high_water or self._watch.health.state != "ok":
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
        """Commit what is queued, stop the writer thread, release the backend.

        Raises `WriterFailed` if the writer had stopped.
        """
        if self._closed or self._thread is None:
            self._closed = True
            return
        self._closed = True
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        self._closing.set()
        self._make_room()
        self._queue.put(_Stop())
        await asyncio.to_thread(self._thread.join)
        if self._reading:
            self._reading = False
            await self.backend.stop_reading()
        if self._failure is not None:
            raise WriterFailed(self._failure)

    async def _watch_health(self) -> None:
        # Polled rather than pushed: "for longer than" needs a clock anyway,
        # and the writer thread must not call into the loop for every batch.
        while True:
            await asyncio.sleep(self._watch.interval_s)
            self._check_health()

    def _check_health(self) -> None:
        self._watch.check(self._pending, self._committer.failing, self._failure)
        if self._watch.health.state != "ok":
            self._room.set()  # agents paused at high water read again (`wait_for_room`)

    # --- the writer thread ---------------------------------------------------

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            self.backend.open()
        except Exception as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        _yield_to_the_loop()
        try:
            self._write_forever()
        except BaseException as exc:  # the thread's top: nothing above it would say
            # A bug here: the Committer handles every error a batch can cause.
            _log.critical("traffic log writer stopped", exc_info=True)
            self._stop_for_good(f"traffic-log writer stopped: {exc!r}")
        finally:
            try:
                self.backend.close()
            except Exception:  # the thread's top: closing must not hide what happened
                _log.warning("traffic log did not close cleanly", exc_info=True)

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
                if stop or rows >= BATCH_ROWS:
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
        outcome = self._committer.commit(batch)
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
