"""The traffic log's writer process: commits what the hub sends, off the hub's GIL and loop.

    python -m kleinmaelzung.hub.store.writer_process   (started by `process.ProcessWriter`)

Reads `feed` messages on stdin, writes `feed` answers on stdout, logs to
stderr (the hub's). One thread reads and decodes the hub's frames into a
queue; the main thread gathers batches and commits them through the same
`Committer` as the thread writer, each batch with its highest stream
position, then reports `Done`. Items at or below the position its
predecessor committed are not written again, only acknowledged.

SIGINT and SIGTERM are ignored: a Ctrl-C or a service manager's stop reaches
the whole process group, and the hub's shutdown (a `Stop`, or the end of
stdin if the hub died) is what ends the writer, after its last commit.

A writer whose hub died (stdin ended without `Stop`) commits no more agent
samples: none of them was acknowledged, so their agents resend them, maybe
to another hub on the same log, which looks up what the log holds at the
first frame of each run (`Store.last_seqs`). A commit of them after that
lookup would log them twice. Everything else it holds (clients' traffic,
which no one resends) is still committed.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO

import msgspec

from ...logformat import configure_logging
from .base import Record
from .batch import Batch, Item, describe, merge_acks
from .committer import Committer
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
    ToWriter,
    Unavailable,
    frame,
)
from .priority import lower_priority, lower_threads
from .urls import backend_for_url
from .writer import BATCH_ROWS

_log = logging.getLogger("kleinmaelzung.hub.store.writer_process")

#: A transaction begins at most this often (unless the batch is full). Each
#: commit writes every page it touched, and a batch of samples from many
#: instruments touches a leaf of each per-instrument index: with 200
#: instruments, about as many pages for 20 rows as for 200. S2 in
#: benchmarks/run.py (2,000 frames/s, SQLite), hub and writer on one core:
#: at once 17 % of a core for the writer; every 10 ms 8 %, with 3,500 page
#: writes and 1,800 page reads a second (strace); every 50 ms the hub's tree
#: 27-28 us per delivery against 31-36 at 10 ms. A longer interval made
#: p99 worse while the writer ran at nice 10 (1.8 ms at 50 ms, 2.1 at 100),
#: from two bursts, both gone: Acks armed per commit (`hub.acks`) and the
#: commit's CPU in front of the hub's next frame (`priority`). Acks wait up
#: to 500 ms to be gathered anyway (`hub.acks`), so 50 ms costs the agents
#: nothing.
COMMIT_INTERVAL_S = 0.05
_decoder = msgspec.msgpack.Decoder(ToWriter)
_raw_records = msgspec.msgpack.Decoder(tuple[str, int, list[msgspec.Raw]])
_record_decoder = msgspec.msgpack.Decoder(Record)


@dataclass(frozen=True, slots=True)
class _Unreadable:
    """A record at `position` that could not be decoded: dropped, its position passed."""

    position: int
    reason: str


@dataclass(frozen=True, slots=True)
class _End:
    """Marker: stdin ended or said Stop; commit what is queued and exit."""

    #: Stdin ended without Stop: the hub died.
    hub_gone: bool = False


@dataclass(frozen=True, slots=True)
class _Chunk:
    """The items of one message from the hub, at positions `first` to `last`.

    Queued as one: a queue operation per record cost the writer a tenth of
    its time.
    """

    first: int
    last: int
    items: list[Item | _Unreadable]
    rows: int
    #: Whether every item could be read.
    readable: bool


_Queued = _Chunk | _End


class _Answers:
    """Writes answers to the hub; the main thread and the committer's retries share it."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, message: FromWriter) -> None:
        with self._lock:
            try:
                self._out.write(frame(message))
                self._out.flush()
            except (BrokenPipeError, ValueError):  # the hub is gone: nobody to tell
                pass


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def _read_message(stream: BinaryIO) -> ToWriter | None:
    header = _read_exactly(stream, HEADER.size)
    if header is None:
        return None
    body = _read_exactly(stream, HEADER.unpack(header)[0])
    if body is None:
        return None
    try:
        message: ToWriter = _decoder.decode(body)
    except msgspec.ValidationError:
        # A record the hub made wrong (a bug upstream): the others are kept.
        return _decode_one_by_one(body)
    return message


def _decode_one_by_one(body: bytes) -> Records:
    _tag, first, raws = _raw_records.decode(body)
    records: list[Record] = []
    for index, raw in enumerate(raws):
        try:
            records.append(_record_decoder.decode(raw))
        except msgspec.ValidationError as exc:
            # Stands in for it: dropped in order, its position passed.
            records.append(_Unreadable(first + index, str(exc)))  # type: ignore[arg-type]
    return Records(first, records)


def _read_forever(
    stream: BinaryIO,
    items: queue.SimpleQueue[_Queued],
    hub_gone: threading.Event | None = None,
) -> None:
    """The reader thread: the hub's frames, decoded, into the queue, each with its position.

    Sets `hub_gone` the moment stdin ends without Stop (before the end marker
    is queued): the batch being gathered then leaves agent samples out.
    """
    stopped = False
    try:
        while True:
            message = _read_message(stream)
            if message is None or isinstance(message, Stop):
                stopped = message is not None
                return
            if isinstance(message, Records):
                readable = True
                for position, record in enumerate(message.records, message.first):
                    if isinstance(record, Record):
                        # Decoded for this process alone: setting it here saves
                        # the hub a copy of every record.
                        object.__setattr__(record, "position", position)
                    else:
                        readable = False
                count = len(message.records)
                last = message.first + count - 1
                chunk = _Chunk(message.first, last, message.records, count, readable)  # type: ignore[arg-type]
                items.put(chunk)
            elif isinstance(message, Save | Forget):
                position = _position(message.change)
                items.put(_Chunk(position, position, [message.change], 0, True))
            elif isinstance(message, Lower):
                lower_threads(message.priority)
    except Exception:  # the thread's top: the writer must still commit what it has
        _log.exception("reading the hub's frames failed")
    finally:
        if not stopped and hub_gone is not None:
            hub_gone.set()
        items.put(_End(hub_gone=not stopped))


def _position(item: Item | _Unreadable) -> int:
    return -1 if item.position is None else item.position


@dataclass(slots=True)
class _Gathered:
    """What one transaction will write, gathered from the queue."""

    committed_before: int
    batch: list[Item] = field(default_factory=list)
    #: Items its predecessor committed: acknowledged, not written again.
    skipped: list[Item] = field(default_factory=list)
    unreadable: list[_Unreadable] = field(default_factory=list)
    rows: int = 0
    last: int = -1
    end: bool = False

    def take(self, chunk: _Queued) -> None:
        if isinstance(chunk, _End):
            self.end = True
            return
        self.last = max(self.last, chunk.last)
        if chunk.readable and chunk.first > self.committed_before:
            self.batch += chunk.items  # type: ignore[arg-type]
            self.rows += chunk.rows
            return
        for item in chunk.items:
            if isinstance(item, _Unreadable):
                self.unreadable.append(item)
            elif _position(item) <= self.committed_before:
                self.skipped.append(item)
            else:
                self.batch.append(item)
                self.rows += isinstance(item, Record)

    @property
    def full(self) -> bool:
        return self.end or self.rows >= BATCH_ROWS


def _leave_to_agents(gathered: _Gathered) -> None:
    """Take the agents' samples out of a batch: their hub died before acknowledging them."""
    kept = [i for i in gathered.batch if not (isinstance(i, Record) and i.ack is not None)]
    if len(kept) < len(gathered.batch):
        _log.warning(
            "hub gone: %d agent records left to their agents to resend",
            len(gathered.batch) - len(kept),
        )
        gathered.batch = kept
        gathered.rows = sum(isinstance(i, Record) for i in kept)


def gather(items: queue.SimpleQueue[_Queued], committed_before: int, until: float) -> _Gathered:
    """Wait for something to write, then take more until the batch is full or `until` passes."""
    gathered = _Gathered(committed_before)
    gathered.take(items.get())
    while not gathered.full:
        wait = until - time.monotonic()
        try:
            chunk = items.get(timeout=wait) if wait > 0 else items.get_nowait()
        except queue.Empty:
            break
        gathered.take(chunk)
    return gathered


def write_forever(
    committer: Committer,
    items: queue.SimpleQueue[_Queued],
    answers: _Answers,
    committed: int,
    closing: threading.Event,
    hub_gone: threading.Event | None = None,
) -> None:
    """Commit batches until the end marker; report each one (`Done`)."""
    next_commit = 0.0
    while True:
        gathered = gather(items, committed, next_commit)
        next_commit = time.monotonic() + COMMIT_INTERVAL_S
        if gathered.end:
            closing.set()  # retries end after the grace time: nobody waits for more
        if hub_gone is not None and hub_gone.is_set():
            _leave_to_agents(gathered)
        skipped = gathered.skipped
        acks: dict[str, dict[str, int]] = Batch.of(skipped).acks if skipped else {}
        committed_rows = dropped_rows = 0
        if gathered.batch:
            outcome = committer.commit(gathered.batch)
            merge_acks(acks, outcome.acks)
            dropped_rows = sum(isinstance(i, Record) for i, _ in outcome.dropped)
            committed_rows = gathered.rows - dropped_rows
            if outcome.dropped:
                _log.error(
                    "traffic log dropped what it cannot write: %s",
                    "; ".join(f"{describe(i)} [{why}]" for i, why in outcome.dropped[:10]),
                )
        for bad in gathered.unreadable:
            _log.error("traffic log dropped a record it cannot read: %s", bad.reason)
            dropped_rows += 1
        if gathered.last >= 0:
            answers.send(Done(gathered.last, acks, committed_rows, dropped_rows))
        if gathered.end:
            return


def main() -> int:
    """Serve one hub's stream until it says Stop or its pipe ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The hub's log format (`kmz --log-format`, inherited as $KMZ_LOG_FORMAT).
    configure_logging(log_format="json" if os.environ.get("KMZ_LOG_FORMAT") == "json" else "text")
    logging.getLogger().setLevel(logging.WARNING)
    stdin, answers = sys.stdin.buffer, _Answers(sys.stdout.buffer)
    start = _read_message(stdin)
    if not isinstance(start, Start):
        return 2
    # Before any thread starts (the backend's included), so that every thread
    # has it: the hub's forwarding keeps the core while a sample waits.
    lower_priority(start.priority)
    try:
        backend = backend_for_url(start.url)
        backend.open()
        committed = backend.committed_position(start.writer)
    except Exception as exc:  # the process's top: the hub says why it cannot start
        answers.send(Unavailable(str(exc) or type(exc).__name__))
        return 2
    answers.send(Ready(committed, os.getpid()))
    items: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
    hub_gone = threading.Event()
    reader = threading.Thread(
        target=_read_forever, args=(stdin, items, hub_gone), name="kmz-log-feed", daemon=True
    )
    reader.start()
    closing = threading.Event()

    def on_failing(failing: tuple[float, str] | None) -> None:
        answers.send(Failing(None) if failing is None else Failing(*failing))

    committer = Committer(backend, closing, writer=start.writer, on_failing=on_failing)
    try:
        write_forever(committer, items, answers, committed, closing, hub_gone)
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
