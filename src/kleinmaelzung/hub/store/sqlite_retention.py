"""Retention on SQLite: batched deletes on a connection of its own, then an incremental vacuum.

Each batch is one short transaction (`RetentionPolicy.batch_rows` sample
rows, a tenth as many traffic rows, a quarter MiB of vacuum), and the pruner
pauses between batches so that the hub's writer, waiting on the lock, gets
it between two of them. The work runs in a worker thread; the hub's loop
only awaits it.

Measured (benchmarks/retention.py, 1M samples over 4 months, 2 shared
cores): a pass removing 518,400 samples and 7,776 frames took 45 s, and a
writer committing every 20 ms meanwhile waited 1.0 ms median, 21 ms p99,
51 ms at most. With batches of 5000 and 10 ms pauses the pass took 11 s,
but that writer's p99 was 447 ms and its worst 648 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from .retention import (
    BOOKKEEPING_GRACE_S,
    KEEP_RUNS,
    KINDS,
    POSITION_GRACE_S,
    TYPES_OF_KIND,
    Kind,
    KindStats,
    LogStats,
    PruneReport,
    RetentionPolicy,
    kind_of,
    named_types,
)

#: Pause between two batches, so that the writer waiting for the lock gets it.
BATCH_PAUSE_S = 0.05
#: Pages an incremental vacuum step frees (1 MiB of 4 KiB pages).
VACUUM_PAGES = 256
#: A traffic row (a whole data frame) weighs as much as this many sample
#: rows: a batch of traffic rows is this much smaller.
TRAFFIC_ROW_WEIGHT = 10
#: How long a batch waits for the writer's lock before the pass gives up.
LOCK_TIMEOUT_S = 5.0

_DELETE_SEQS = """
DELETE FROM instrument_seq WHERE updated < ? AND rowid IN (
    SELECT rowid FROM (
        SELECT rowid, row_number() OVER (
            PARTITION BY instrument ORDER BY updated DESC, run DESC) AS newest
        FROM instrument_seq)
    WHERE newest > ?)
"""


def _type_filter(kind: Kind) -> tuple[str, tuple[str, ...]]:
    """The SQL condition on `type` selecting `kind`'s entries, and its parameters."""
    if kind == "wire":
        others = named_types()
        return f"type NOT IN ({', '.join('?' * len(others))})", others
    types = TYPES_OF_KIND[kind]
    return f"type IN ({', '.join('?' * len(types))})", types


class SqlitePruner:
    """Removes what is due from one SQLite traffic log."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def prune(self, policy: RetentionPolicy, now: float) -> PruneReport:
        """Remove what is due at `now`, a batch at a time; then hand free pages back."""
        return await asyncio.to_thread(self._prune, policy, now)

    async def stats(self, policy: RetentionPolicy) -> LogStats:
        """Sizes and oldest entry per kind (reads the whole log once)."""
        return await asyncio.to_thread(self._stats, policy)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=LOCK_TIMEOUT_S)
        try:
            yield connection
        finally:
            connection.close()

    def _prune(self, policy: RetentionPolicy, now: float) -> PruneReport:
        report = PruneReport(removed={})
        with self._connect() as connection:
            for kind, cutoff in policy.cutoffs(now).items():
                if cutoff is None:
                    continue
                if kind == "samples":
                    removed = self._prune_samples(connection, cutoff, policy.batch_rows)
                else:
                    batch = max(1, policy.batch_rows // TRAFFIC_ROW_WEIGHT)
                    removed = self._prune_traffic(connection, kind, cutoff, batch)
                if removed:
                    report.removed[kind] = removed
            report.seqs_removed = connection.execute(
                _DELETE_SEQS, (now - BOOKKEEPING_GRACE_S, KEEP_RUNS)
            ).rowcount
            report.positions_removed = connection.execute(
                "DELETE FROM writer_position WHERE committed_at < ?", (now - POSITION_GRACE_S,)
            ).rowcount
            self._vacuum(connection)
        return report

    def _prune_traffic(
        self, connection: sqlite3.Connection, kind: Kind, cutoff: float, batch_rows: int
    ) -> int:
        # Walks the ts index from the oldest entry: each batch starts where
        # the one before ended, so entries of kinds kept longer are read once.
        condition, types = _type_filter(kind)
        select = (
            f"SELECT id, ts FROM traffic WHERE ts >= ? AND ts < ? AND {condition}"
            " ORDER BY ts LIMIT ?"
        )
        removed = 0
        start = float("-inf")
        while True:
            connection.execute("BEGIN IMMEDIATE")
            try:
                rows = connection.execute(select, (start, cutoff, *types, batch_rows)).fetchall()
                connection.executemany("DELETE FROM traffic WHERE id = ?", [(r[0],) for r in rows])
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            removed += len(rows)
            if len(rows) < batch_rows:
                return removed
            start = rows[-1][1]
            time.sleep(BATCH_PAUSE_S)

    def _prune_samples(self, connection: sqlite3.Connection, cutoff: float, batch_rows: int) -> int:
        # No index on the receive time (it would cost every write): samples
        # are walked in the order they were written, which is the order they
        # were received, and the walk stops at the first batch with none due.
        # A sample written after newer ones (the hub's clock set back) goes
        # with its neighbours, on a later pass.
        removed = 0
        after = 0
        while True:
            connection.execute("BEGIN IMMEDIATE")
            try:
                rows = connection.execute(
                    "SELECT rowid, received FROM sample WHERE rowid > ? ORDER BY rowid LIMIT ?",
                    (after, batch_rows),
                ).fetchall()
                due = [(rowid,) for rowid, received in rows if received < cutoff]
                connection.executemany("DELETE FROM sample WHERE rowid = ?", due)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            removed += len(due)
            if not due or len(rows) < batch_rows:
                return removed
            after = rows[-1][0]
            time.sleep(BATCH_PAUSE_S)

    def _vacuum(self, connection: sqlite3.Connection) -> None:
        # A file made before version 9 does not vacuum incrementally (that
        # takes a full VACUUM): it reuses the free pages instead of growing.
        (mode,) = connection.execute("PRAGMA auto_vacuum").fetchone()
        if mode != 2:
            return
        while connection.execute("PRAGMA freelist_count").fetchone()[0] > 0:
            # executescript, not execute: Python's cursor steps a pragma once,
            # which frees one page per commit (10,836 pages took 131 s).
            connection.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
            time.sleep(BATCH_PAUSE_S)

    def _stats(self, policy: RetentionPolicy) -> LogStats:
        rows = dict.fromkeys(KINDS, 0)
        sizes = dict.fromkeys(KINDS, 0)
        oldest: dict[str, float | None] = dict.fromkeys(KINDS)
        with self._connect() as connection:
            by_type = connection.execute(
                "SELECT type, count(*), coalesce(sum(length(message)), 0), min(ts)"
                " FROM traffic GROUP BY type"
            ).fetchall()
            samples = connection.execute(
                "SELECT count(*), coalesce(sum(length(channel_values)), 0), min(received)"
                " FROM sample"
            ).fetchone()
            (seqs,) = connection.execute("SELECT count(*) FROM instrument_seq").fetchone()
            (positions,) = connection.execute("SELECT count(*) FROM writer_position").fetchone()
        for type_, count, size, first in by_type:
            kind = kind_of(type_)
            rows[kind] += count
            sizes[kind] += size
            known = oldest[kind]
            oldest[kind] = first if known is None else min(known, first)
        rows["samples"], sizes["samples"], oldest["samples"] = samples
        total = sum(
            path.stat().st_size
            for path in (self.path, self.path.with_name(self.path.name + "-wal"))
            if path.exists()
        )
        return LogStats(
            backend="sqlite",
            total_bytes=total,
            kinds=[
                KindStats(
                    kind=kind,
                    rows=rows[kind],
                    bytes=sizes[kind],
                    oldest=oldest[kind],
                    retention_days=policy.days(kind),
                )
                for kind in KINDS
            ],
            instrument_seqs=seqs,
            writer_positions=positions,
        )
