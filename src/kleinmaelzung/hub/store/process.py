"""The traffic log written by a process of its own: the hub's `Store` for `kmz hub`.

Why a process: the thread writer binds rows and commits under the hub's GIL
and on its core, and that was about half of the hub's CPU in the S2x
benchmark (issue 4's note). Here the hub only frames what it already holds
(the wire bytes of each message, in a `Record`) and hands it to
`writer_process` once per loop iteration; the writer commits in batches
and answers with the position it committed up to and the acks it makes.

How the frames travel: a pipe, not a shared-memory ring. On the hub's side,
per record, with one S1-shaped record (benchmarks/writer_feed.py, the hub on
one core, 100,000 records):

    records per loop iteration     1      10     100
    pipe (one os.write)          2.01   0.81   0.59  us
    ring (copy + eventfd wake)   3.08   0.99   0.66  us

Both make one system call per iteration (the ring's reader must be woken,
or poll the shared core); the kernel's copy into a 1 MiB pipe beats
Python's slice copy into the ring, and the pipe needs no locking of its own.

Crash semantics are the thread writer's: nothing is acknowledged that is
not committed. Every item the hub logs gets a position in its stream, and
each batch commits its highest position with its rows (`writer_position`).
The hub keeps what it sent until the writer reports it committed; when the
writer process dies (SIGKILL, a crash), the hub starts another, which reads
how far its predecessor got, and the hub sends again what is beyond that:
no row is lost and none is written twice, and the agents, which keep
whatever is unacknowledged, resend nothing. Acks for what the dead writer
committed but could not report come from its successor.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import secrets
import sys
import time
from dataclasses import dataclass, field

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
from .batch import ForgetInstrument, SaveInstrument
from .committer import CLOSE_GRACE_S
from .feed import (
    HEADER,
    Done,
    Failing,
    Forget,
    FromWriter,
    Lower,
    Ready,
    Records,
    Save,
    Start,
    Stop,
    Unavailable,
    frame,
)
from .health import HealthWatch
from .priority import IDLE, LOW
from .urls import backend_for_url
from .writer import DEGRADED_AFTER_S, HIGH_WATER_ROWS, LOW_WATER_ROWS

_log = logging.getLogger(__name__)

#: Restarting a writer process that died: the first delay, doubled while it
#: keeps dying soon after its start, up to the longest.
RESTART_FIRST_S = 0.1
RESTART_MAX_S = 5.0
#: A writer that lived this long is not in a crash loop: its successor starts at once.
STABLE_S = 10.0
#: How long close() waits for the writer's last commit before it kills it.
CLOSE_WAIT_S = CLOSE_GRACE_S + 8.0
#: Records wait this long in the hub to be sent with later ones: a message
#: per loop iteration woke the writer 2,000 times a second in S2. Kept short
#: for the same reason as `writer_process.COMMIT_INTERVAL_S` (see there).
SEND_INTERVAL_S = 0.001
#: A writer starts at `priority.LOW` and is lowered to `priority.IDLE` once
#: the backlog has stayed under low water this long (`priority` says why).
IDLE_AFTER_S = 2.0
#: A writer at `IDLE` whose backlog stays over low water this long, or
#: reaches high water, is starved of CPU (every core busy) or its disk is
#: slow: it is replaced by one at `LOW`.
STARVED_AFTER_S = 3.0
#: ... or whose oldest uncommitted item waits this long, however small the
#: backlog: a starved writer with a handful of records would otherwise hold
#: up every flush (a calibration capture, a resumed subscription) for as long
#: as the machine stays busy. Browser tests on two loaded cores showed it: a
#: capture waited more than 15 s. A writer that keeps up commits within its
#: 50 ms interval.
STARVED_LAG_S = 1.0
#: ... which is lowered again only after the log kept up this long.
CALM_AFTER_S = 600.0
#: How often the writer's priority is checked (and the log's health with it).
PRIORITY_CHECK_S = 0.25
#: The pipe to the writer holds this much before the hub's loop buffers.
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031  # Linux

_answers = msgspec.msgpack.Decoder(FromWriter)


@dataclass(slots=True)
class _Chunk:
    """Items sent (or to be sent) to the writer, kept until it reports them committed."""

    first: int
    last: int
    #: Traffic rows in it (0 for an instrument change), and how many of them are done.
    rows: int
    data: bytes
    counted: int = 0
    #: When it was handed to the writer (monotonic): how long the oldest waits.
    sent_at: float = field(default_factory=time.monotonic)


class ProcessWriter(BackendReads):
    """Append-only traffic log whose writing runs in a process of its own."""

    def __init__(
        self,
        url: str,
        backend: LogBackend | None = None,
        *,
        on_committed: OnCommitted | None = None,
        high_water_rows: int = HIGH_WATER_ROWS,
        low_water_rows: int = LOW_WATER_ROWS,
        degraded_after_s: float = DEGRADED_AFTER_S,
        on_health: OnHealth | None = None,
        priority: str = IDLE,
        idle_after_s: float = IDLE_AFTER_S,
        starved_after_s: float = STARVED_AFTER_S,
        starved_lag_s: float = STARVED_LAG_S,
        calm_after_s: float = CALM_AFTER_S,
    ) -> None:
        self.url = url
        #: The read side, on the hub's loop; the writer process opens its own.
        self.backend = backend if backend is not None else backend_for_url(url)
        #: This hub's stream, as the log's `writer_position` names it.
        self.writer_id = f"{secrets.token_hex(8)}"
        self._on_committed = on_committed
        self._high_water = high_water_rows
        self._low_water = low_water_rows
        self._watch = HealthWatch(
            self.backend.location,
            high_water_rows=high_water_rows,
            low_water_rows=low_water_rows,
            degraded_after_s=degraded_after_s,
            on_health=on_health,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The next item's position, and the records of this loop iteration.
        self._next = 0
        self._records: list[Record] = []
        self._records_first = 0
        self._chunks: collections.deque[_Chunk] = collections.deque()
        self._committed = -1
        self._sent_rows = 0
        self._done_rows = 0
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []
        self._room = asyncio.Event()
        self._room.set()
        self._throttled = False
        self._process: asyncio.subprocess.Process | None = None
        self._ready = False
        #: Why writes fail (since when), as the writer reports it.
        self._failing: tuple[float, str] | None = None
        #: Since when and why there is no writer process to write.
        self._down: tuple[float, str] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._stop_restarting = asyncio.Event()
        self._reading = False
        self._closed = False
        self.committed_rows = 0
        #: Rows dropped because the backend refused them for good (see the writer's ERROR log).
        self.dropped_rows = 0
        #: Writer processes started after the first (each one after a death).
        self.restarts = 0
        #: The current writer process's id; None while there is none.
        self.writer_pid: int | None = None
        #: How the writer process yields the CPU now (`priority`): each starts at `LOW`.
        self.writer_priority = LOW
        #: What it runs at while the log keeps up: `IDLE` unless asked otherwise.
        self._wanted_priority = priority
        self._starved_after_s = starved_after_s
        self._starved_lag_s = starved_lag_s
        self._calm_after_s = calm_after_s
        #: How long the log must keep up before the writer is lowered: short
        #: after a start, long after a writer at `IDLE` fell behind.
        self._lower_after_s = idle_after_s
        #: Since when (monotonic) the backlog is over low water, or under it.
        self._behind_since: float | None = None
        self._calm_since = time.monotonic()
        #: The writer was stopped to start one at another priority: no crash.
        self._replacing = False
        #: Agents were paused at high water since the last check.
        self._hit_high_water = False

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

    @property
    def backlog(self) -> int:
        """Records appended but not yet committed."""
        return self._sent_rows - self._done_rows

    async def open(self) -> None:
        """Start the writer process (which creates or upgrades the log), then open the reads.

        Raises `StoreUnavailable`, naming the log, if the backend cannot be opened.
        """
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._supervisor = asyncio.create_task(self._supervise(ready), name="kmz-log-writer")
        try:
            await ready
            await self.backend.start_reading()
        except Exception as exc:
            self._closed = True
            self._stop_restarting.set()
            await self._end_process()
            raise StoreUnavailable(
                f"cannot open the traffic log {self.location}: {exc or type(exc).__name__}"
            ) from exc
        self._reading = True
        self._health_task = asyncio.create_task(self._watch_health(), name="kmz-log-health")

    # --- the write side: framed once per loop iteration -----------------------

    def append(self, record: Record) -> None:
        """Queue a record for writing; never blocks the event loop."""
        if self._closed:
            raise StoreClosed("traffic log is closed")
        if not self._records:
            self._records_first = self._next
            assert self._loop is not None, "open() first"
            self._loop.call_later(SEND_INTERVAL_S, self._send_records)
        self._records.append(record)
        self._next += 1
        self._sent_rows += 1

    def save_instrument(
        self, info: InstrumentInfo, agent: str, last_seen: float | None = None
    ) -> None:
        """Queue remembering an instrument (committed with the next batch); never blocks."""
        self._check_open()
        self._send_records()
        position = self._take_position()
        change = SaveInstrument(
            info.id, agent, msgspec.json.encode(info).decode(), last_seen, position
        )
        self._send(_Chunk(position, position, 0, frame(Save(change))))

    def forget_instrument(self, instrument_id: str) -> None:
        """Queue forgetting a remembered instrument; its logged traffic stays."""
        self._check_open()
        self._send_records()
        position = self._take_position()
        self._send(
            _Chunk(position, position, 0, frame(Forget(ForgetInstrument(instrument_id, position))))
        )

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("traffic log is closed")

    def _take_position(self) -> int:
        position = self._next
        self._next += 1
        return position

    def _send_records(self) -> None:
        """Frame this iteration's records as one message and send it."""
        records = self._records
        if not records:
            return
        self._records = []
        first = self._records_first
        data = frame(Records(first, records))
        self._send(_Chunk(first, first + len(records) - 1, len(records), data))

    def _send(self, chunk: _Chunk) -> None:
        self._chunks.append(chunk)
        if self._ready:
            self._write(chunk.data)

    def _write(self, data: bytes) -> None:
        process = self._process
        if process is None or process.stdin is None or process.stdin.is_closing():
            return  # it died: its successor gets what is kept
        process.stdin.write(data)

    async def wait_for_room(self) -> None:
        """Return at once unless the backlog is over high water; then wait for low water.

        Also at once, and for those waiting, once the log is degraded: the
        hub then forwards samples without logging them (`handlers`).
        """
        if self.backlog <= self._high_water or self._watch.health.state != "ok":
            return
        first = not self._throttled
        self._throttled = True
        self._hit_high_water = True
        self._room.clear()
        if first:  # once per pause, not once per agent
            _log.warning("traffic log behind; pausing agents", extra={"backlog": self.backlog})
        if not self._closed:
            await self._room.wait()
        self._throttled = False

    async def flush(self) -> None:
        """Wait until everything appended so far is committed (or dropped as unwritable)."""
        self._send_records()
        target = self._next - 1
        if target <= self._committed:
            return
        if self._closed and self._supervisor is not None and self._supervisor.done():
            raise WriterFailed("traffic log closed before it committed everything")
        assert self._loop is not None, "open() first"
        done: asyncio.Future[None] = self._loop.create_future()
        self._flushes.append((target, done))
        await done

    async def close(self) -> None:
        """Commit what is queued, let the writer process end, release the backend."""
        if self._closed:
            return
        self._closed = True
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        self._send_records()
        self._stop_restarting.set()
        self._room.set()
        if self._ready:
            self._write(frame(Stop()))
        process = self._process
        if process is not None and process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()  # a writer not yet ready sees the end of its input
        await self._end_process()
        for _, waiter in self._flushes:
            if not waiter.done():
                waiter.set_exception(WriterFailed("traffic log closed before it committed this"))
        self._flushes.clear()
        if self._reading:
            self._reading = False
            await self.backend.stop_reading()

    async def _end_process(self) -> None:
        if self._supervisor is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._supervisor), CLOSE_WAIT_S)
        except TimeoutError:
            _log.error("traffic log writer did not finish; killed")
            if self._process is not None and self._process.returncode is None:
                self._process.kill()
            await self._supervisor

    # --- the writer process: started, watched, restarted ------------------------

    async def _supervise(self, ready: asyncio.Future[None]) -> None:
        delay = RESTART_FIRST_S
        while True:
            started = time.monotonic()
            code, why = await self._run_writer(ready)
            if ready.done() and ready.exception() is not None:
                return  # never opened: open() says why
            if self._stop_restarting.is_set():
                return
            self._ready = False
            self._failing = None
            self.writer_pid = None
            self.writer_priority = LOW  # as its successor starts
            self._calm_since = time.monotonic()
            if self._replacing:
                self._replacing = False
                continue  # at once: what it had not committed goes to its successor
            reason = why or f"its writer process exited with {code}"
            if self._down is None:
                self._down = (time.monotonic(), reason)
            _log.error("traffic log writer stopped; restarting", extra={"reason": reason})
            delay = RESTART_FIRST_S if time.monotonic() - started > STABLE_S else delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_restarting.wait(), delay)
            if self._stop_restarting.is_set():
                return
            delay = min(RESTART_MAX_S, delay * 2)
            self.restarts += 1

    async def _run_writer(self, ready: asyncio.Future[None]) -> tuple[int | None, str]:
        """One writer process from start to exit: its exit status, and why it could not open."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kleinmaelzung.hub.store.writer_process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._process = process
        assert process.stdin is not None and process.stdout is not None
        pipe = process.stdin.transport.get_extra_info("pipe")
        with contextlib.suppress(OSError, AttributeError):  # not Linux, or over pipe-max-size
            fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
        process.stdin.write(frame(Start(self.url, self.writer_id, LOW)))
        why = ""
        try:
            answer = await _read_answer(process.stdout)
            if isinstance(answer, Ready):
                self.writer_pid = answer.pid
                self._down = None
                self._ready = True
                # Everything kept, again: the writer skips what its predecessor committed.
                for chunk in self._chunks:
                    self._write(chunk.data)
                if not ready.done():
                    ready.set_result(None)
                while (answer := await _read_answer(process.stdout)) is not None:
                    if isinstance(answer, Done):
                        self._done(answer)
                    elif isinstance(answer, Failing):
                        self._failing = (
                            None if answer.since is None else (answer.since, answer.reason)
                        )
            else:
                why = (
                    answer.reason
                    if isinstance(answer, Unavailable)
                    else "its writer process ended before it was ready"
                )
                if not ready.done():
                    ready.set_exception(StoreUnavailable(why))
        finally:
            self._ready = False
            if process.returncode is None and not self._stop_restarting.is_set():
                process.kill()  # its answers ended: it is of no use any more
            code = await process.wait()
        return code, why

    def _done(self, done: Done) -> None:
        """The writer committed everything up to `done.position`."""
        if done.position > self._committed:
            self._committed = committed = done.position
            chunks = self._chunks
            while chunks and chunks[0].last <= committed:
                chunk = chunks.popleft()
                self._done_rows += chunk.rows - chunk.counted
            if chunks and chunks[0].rows and chunks[0].first <= committed:
                chunk = chunks[0]
                counted = committed - chunk.first + 1
                self._done_rows += counted - chunk.counted
                chunk.counted = counted
            if self._flushes:
                waiting = []
                for target, waiter in self._flushes:
                    if target > committed:
                        waiting.append((target, waiter))
                    elif not waiter.done():
                        waiter.set_result(None)
                self._flushes = waiting
        self.committed_rows += done.committed_rows
        self.dropped_rows += done.dropped_rows
        if self._throttled and self.backlog < self._low_water:
            self._throttled = False
            self._room.set()
        if done.acks and self._on_committed is not None:
            self._on_committed(done.acks)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(min(self._watch.interval_s, PRIORITY_CHECK_S))
            self._watch.check(self.backlog, self._failing or self._down)
            self._check_priority()
            if self._watch.health.state != "ok":
                self._room.set()  # agents paused at high water read again (`wait_for_room`)

    def _check_priority(self) -> None:
        """Lower a writer at `LOW` once the log keeps up; replace one starved at `IDLE`."""
        now = time.monotonic()
        hit_high_water, self._hit_high_water = self._hit_high_water, False
        lagging = bool(self._chunks) and now - self._chunks[0].sent_at >= self._starved_lag_s / 2
        if self.backlog > self._low_water or hit_high_water or lagging:
            self._calm_since = now
        if self.backlog > self._low_water:
            if self._behind_since is None:
                self._behind_since = now
        else:
            self._behind_since = None
        if not self._ready or self._replacing or self._failing is not None:
            return  # a writer that cannot write is not starved
        behind_s = 0.0 if self._behind_since is None else now - self._behind_since
        lag_s = now - self._chunks[0].sent_at if self._chunks else 0.0
        if self.writer_priority == IDLE and (
            hit_high_water or behind_s >= self._starved_after_s or lag_s >= self._starved_lag_s
        ):
            _log.warning(
                "traffic log writer behind at idle priority (every core busy, or a slow disk):"
                " restarting it at nice 10",
                extra={
                    "backlog": self.backlog,
                    "behind_s": round(behind_s, 1),
                    "oldest_waits_s": round(lag_s, 1),
                },
            )
            self._lower_after_s = self._calm_after_s
            self._replace()
        elif (
            self.writer_priority == LOW
            and self._wanted_priority == IDLE
            and now - self._calm_since >= self._lower_after_s
        ):
            if self._lower_after_s == self._calm_after_s:
                _log.info("traffic log writer kept up: back to idle priority")
            self.writer_priority = IDLE
            self._write(frame(Lower(IDLE)))

    def _replace(self) -> None:
        """Stop the writer process at once; its successor starts at `LOW`."""
        self._behind_since = None
        process = self._process
        if process is not None and process.returncode is None:
            self._replacing = True
            process.kill()  # a SIGSTOPped or starved process ends too; its batch rolls back


async def _read_answer(stream: asyncio.StreamReader) -> FromWriter | None:
    """The writer's next answer; None once its output ended (it exited or died)."""
    try:
        header = await stream.readexactly(HEADER.size)
        body = await stream.readexactly(HEADER.unpack(header)[0])
    except asyncio.IncompleteReadError:
        return None
    answer: FromWriter = _answers.decode(body)
    return answer
