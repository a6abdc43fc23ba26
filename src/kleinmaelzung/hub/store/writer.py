"""Committing one batch of the traffic log: retry what may heal, isolate what never will.

Runs on the store's writer thread. A batch is log rows plus changes to the
known instruments, written in one transaction. `BatchWriter.write` returns
what it committed and what it had to drop; it never raises for a batch, so
that no batch can stop the writer.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass

from . import schema
from .base import Record

_log = logging.getLogger(__name__)

#: Retrying a write that failed in a way that may heal: the first delay,
#: doubled per attempt up to the longest.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 5.0
#: Once closing, how long a failing write is retried before its rows are
#: given up (the agents still hold whatever was not acknowledged).
CLOSE_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class SaveInstrument:
    """Remember an instrument (`info` is its InstrumentInfo as JSON)."""

    id: str
    agent: str
    info: str
    last_seen: float | None

    def describe(self) -> str:
        """What this change is, for a log line."""
        return f"remembering instrument {self.id!r} of agent {self.agent!r}"


@dataclass(frozen=True, slots=True)
class ForgetInstrument:
    """Forget a remembered instrument."""

    id: str

    def describe(self) -> str:
        """What this change is, for a log line."""
        return f"forgetting instrument {self.id!r}"


#: What one transaction writes: log rows and changes to the known instruments.
Item = Record | SaveInstrument | ForgetInstrument


@dataclass(slots=True)
class Outcome:
    """What became of a batch."""

    committed: list[Item]
    #: Each dropped item with the reason SQLite gave.
    dropped: list[tuple[Item, str]]
    #: What to acknowledge: the highest committed seq per ack key and instrument.
    acks: dict[str, dict[str, int]]


class BatchWriter:
    """Writes batches on one connection; `closing` cuts retries short."""

    def __init__(self, connection: sqlite3.Connection, closing: threading.Event) -> None:
        self._connection = connection
        self._closing = closing

    def write(self, items: list[Item]) -> Outcome:
        """Commit `items` in as few transactions as SQLite allows; never raises."""
        outcome = Outcome([], [], {})
        self._write(items, outcome)
        return outcome

    def _write(self, items: list[Item], outcome: Outcome) -> None:
        attempt = 0
        give_up_at: float | None = None
        while True:
            try:
                committed_acks = transact(self._connection, items)
            except sqlite3.OperationalError as exc:
                # A full disk, a locked or read-only file: it may heal, so keep
                # the batch and retry; the agents keep unacknowledged samples
                # and are paused once the backlog reaches high water.
                attempt += 1
                if self._closing.is_set():
                    give_up_at = give_up_at or time.monotonic() + CLOSE_GRACE_S
                    if time.monotonic() >= give_up_at:
                        outcome.dropped.extend((item, f"closing: {exc}") for item in items)
                        return
                if attempt & (attempt - 1) == 0:  # attempts 1, 2, 4, 8...: not a flood
                    _log.error(
                        "traffic log write failed; retrying",
                        extra={"batch": len(items), "attempt": attempt, "error": str(exc)},
                    )
                self._closing.wait(min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempt - 1)))
                continue
            except Exception as exc:
                # Not the file but the content: some item SQLite will never
                # take (a bug upstream). Halve the batch until it is found, so
                # that one bad row costs only itself, never the queue.
                if len(items) == 1:
                    outcome.dropped.append((items[0], repr(exc)))
                    return
                middle = len(items) // 2
                self._write(items[:middle], outcome)
                self._write(items[middle:], outcome)
                return
            if attempt:
                _log.warning("traffic log writes again", extra={"attempts": attempt})
            outcome.committed.extend(items)
            merge_acks(outcome.acks, committed_acks)
            return


def transact(connection: sqlite3.Connection, items: list[Item]) -> dict[str, dict[str, int]]:
    """Write items in one transaction, or not at all; return what to acknowledge."""
    rows = []
    # One pass for all three: the rows, what to acknowledge after the commit,
    # and the newest seq per instrument run to commit with the rows (this
    # thread competes with the loop for the GIL: S2x p50 measured it).
    acks: dict[str, dict[str, int]] = {}
    newest: dict[str, tuple[str, int]] = {}
    others = False
    for r in items:
        if not isinstance(r, Record):
            others = True
            continue
        rows.append(
            (r.ts, r.direction, r.peer, r.instrument, r.type, r.message.decode(), r.delivered_to)
        )
        if r.ack is None:
            continue
        key, seqs = r.ack
        key_acks = acks.setdefault(key, {})
        for instrument, seq in seqs.items():
            if seq > key_acks.get(instrument, -1):
                key_acks[instrument] = seq
            if r.run:
                newest[instrument] = (r.run, seq)
    try:
        connection.execute("BEGIN")
        connection.executemany(schema.INSERT_TRAFFIC, rows)
        connection.executemany(
            schema.UPSERT_SEQ, [(i, run, seq) for i, (run, seq) in newest.items()]
        )
        if others:
            for item in items:
                if isinstance(item, SaveInstrument):
                    connection.execute(
                        schema.UPSERT_INSTRUMENT, (item.id, item.agent, item.info, item.last_seen)
                    )
                elif isinstance(item, ForgetInstrument):
                    connection.execute(schema.DELETE_INSTRUMENT, (item.id,))
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # keep the first error, not this one
                connection.execute("ROLLBACK")
        raise
    return acks


def merge_acks(into: dict[str, dict[str, int]], acks: dict[str, dict[str, int]]) -> None:
    """Keep the highest seq per key and instrument of both."""
    for key, seqs in acks.items():
        key_acks = into.setdefault(key, {})
        for instrument, seq in seqs.items():
            if seq > key_acks.get(instrument, -1):
                key_acks[instrument] = seq


def describe(item: Item) -> str:
    """An item for a log line: enough to find the bug that produced it."""
    if isinstance(item, Record):
        return (
            f"{item.direction} {item.type} of {item.peer!r}"
            f" (instrument {item.instrument!r}, ts {item.ts!r}): {repr(item.message)[:120]}"
        )
    return item.describe()
