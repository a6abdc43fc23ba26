"""Per-minute summaries on SQLite: the roll-up pass and history read from them (`summaries`).

The feed is the sample table's rowid: SQLite gives a new row the largest
rowid plus one, under the file's write lock, so rowids grow in commit order.
(Were every sample removed, rowids would start again at 1: a watermark
above the largest rowid is reset, and history reads raw until it is.)

The roll-up runs in a worker thread on a connection of its own. Writing
takes the file's lock for a millisecond or so per batch (a feed step: the
pending ranges and the watermark; a roll: one batch's summary rows); the
samples are read outside any write transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .queries import HistoryRow
from .summaries import (
    BATCH_PAUSE_S,
    BATCH_SAMPLES,
    FEED_ROWS,
    MARGIN_S,
    MAX_TAIL_ROWS,
    PASS_BUDGET_S,
    PassReport,
    merged_rows,
    minute_of,
    plan,
    runs,
    subtract,
    union,
)

#: How long a write waits for the hub's writer before the pass gives up.
LOCK_TIMEOUT_S = 5.0
_FAR = 2**62

# Every distinct instrument of a table, one index probe each.
_INSTRUMENTS = """
WITH RECURSIVE i(name) AS (
    SELECT min(instrument) FROM {table}
    UNION ALL SELECT (SELECT min(instrument) FROM {table} WHERE instrument > i.name)
    FROM i WHERE i.name IS NOT NULL)
SELECT name FROM i WHERE name IS NOT NULL
"""
# The minute by the comparisons history's reads make (60 m <= ts < 60 m + 60).
#: Up to `FEED_ROWS` sample rows past the watermark, by instrument and minute
#: (`summaries.minute_of`, by the same comparisons): their newest rowid and count.
_FEED = """
WITH fed AS (
    SELECT rowid, instrument, ts, CAST(ts / 60 AS INTEGER) AS m
    FROM sample WHERE rowid > ? ORDER BY rowid LIMIT ?
)
SELECT instrument, m - (ts < m * 60) + (ts >= (m + 1) * 60) AS minute, max(rowid), count(*)
FROM fed GROUP BY instrument, minute
"""
_ROLL = """
SELECT m, j.key, count(*), min(j.value), max(j.value), total(j.value) FROM (
    SELECT q - (ts < q * 60) + (ts >= q * 60 + 60) AS m, channel_values FROM (
        SELECT CAST(ts / 60 AS INTEGER) AS q, ts, channel_values FROM sample
        WHERE instrument = :instrument AND ts >= :lo AND ts < :hi)
) AS s, json_each(s.channel_values) AS j
WHERE j.type IN ('integer', 'real')
GROUP BY m, j.key
"""
_RANGES = (
    "(SELECT json_extract(value, '$[0]') AS lo, json_extract(value, '$[1]') AS hi"
    " FROM json_each(:ranges))"
)
_FROM_SUMMARIES = f"""
SELECT CAST((s.minute * 60 - :start) / :every AS INTEGER) AS bucket, s.channel,
    sum(s.samples), min(s.minimum), max(s.maximum), sum(s.total)
FROM {_RANGES} AS r CROSS JOIN sample_minute AS s
WHERE s.instrument = :instrument AND s.minute >= r.lo AND s.minute < r.hi /* channels */
GROUP BY bucket, s.channel
"""
_RAW_CHANNELS = f"""
SELECT CAST((s.ts - :start) / :every AS INTEGER) AS bucket, j.key,
    count(*), min(j.value), max(j.value), total(j.value)
FROM {_RANGES} AS r CROSS JOIN sample AS s CROSS JOIN json_each(s.channel_values) AS j
WHERE s.instrument = :instrument AND s.ts >= r.lo AND s.ts < r.hi
    AND j.type IN ('integer', 'real') /* channels */
GROUP BY bucket, j.key
"""
_RAW_ONE_CHANNEL = f"""
SELECT bucket, :channel, count(*), min(v), max(v), total(v) FROM (
    SELECT CAST((s.ts - :start) / :every AS INTEGER) AS bucket,
        json_extract(s.channel_values, :path) AS v
    FROM {_RANGES} AS r CROSS JOIN sample AS s
    WHERE s.instrument = :instrument AND s.ts >= r.lo AND s.ts < r.hi
        AND json_type(s.channel_values, :path) IN ('integer', 'real')
) GROUP BY bucket
"""


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(path, isolation_level=None, timeout=LOCK_TIMEOUT_S)
    try:
        yield connection
    finally:
        connection.close()


@contextlib.contextmanager
def _writing(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _pending(connection: sqlite3.Connection, instrument: str) -> list[tuple[int, int]]:
    return [
        (first, end)
        for first, end in connection.execute(
            "SELECT first_minute, end_minute FROM sample_minute_pending WHERE instrument = ?",
            (instrument,),
        )
    ]


def _set_pending(
    connection: sqlite3.Connection, instrument: str, ranges: list[tuple[int, int]]
) -> None:
    connection.execute("DELETE FROM sample_minute_pending WHERE instrument = ?", (instrument,))
    connection.executemany(
        "INSERT INTO sample_minute_pending (instrument, first_minute, end_minute) VALUES (?, ?, ?)",
        [(instrument, first, end) for first, end in union(ranges)],
    )


class SqliteRollup:
    """Keeps the summaries of one SQLite traffic log."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def oldest_kept(self) -> float | None:
        """SQLite removes samples one by one: no coarser unit."""
        return None

    async def run_pass(self, now: float, horizon: int | None) -> PassReport:
        """Follow the feed, then roll up every closed pending minute, in batches."""
        return await asyncio.to_thread(self._pass, now, horizon)

    def _pass(self, now: float, horizon: int | None) -> PassReport:
        report = PassReport()
        deadline = time.monotonic() + PASS_BUDGET_S
        with _connect(self.path) as connection:
            watermark = self._start(connection)
            if horizon is not None:
                report.dropped_below_horizon = self._drop_below(connection, horizon)
            while True:
                watermark, rows = self._follow(connection, watermark, horizon)
                report.feed_rows += rows
                if rows < FEED_ROWS:
                    break
                if time.monotonic() > deadline:
                    report.more = True
                    return report
                time.sleep(BATCH_PAUSE_S)
            closed = minute_of(now - MARGIN_S)
            minutes = 60
            while True:
                done = self._roll_one(connection, watermark, closed, minutes)
                if done is None:
                    break
                rolled, samples = done
                report.minutes += rolled
                report.samples += samples
                minutes = max(1, min(1440, BATCH_SAMPLES * rolled // max(samples, 1)))
                if time.monotonic() > deadline:
                    report.more = True
                    return report
                time.sleep(BATCH_PAUSE_S)
        return report

    def _start(self, connection: sqlite3.Connection) -> int:
        """The watermark; on the first pass over a log, everything in it noted as pending."""
        # Read first: a pass with nothing to start takes no lock.
        row = connection.execute("SELECT watermark FROM sample_minute_state").fetchone()
        newest = connection.execute("SELECT coalesce(max(rowid), 0) FROM sample").fetchone()
        if row is not None and row[0] <= newest[0]:
            return int(row[0])
        with _writing(connection):
            row = connection.execute("SELECT watermark FROM sample_minute_state").fetchone()
            newest = connection.execute("SELECT coalesce(max(rowid), 0) FROM sample").fetchone()
            if row is not None and row[0] <= newest[0]:
                return int(row[0])
            # A new log, an upgraded one (backfill), or rowids started again.
            watermark = int(newest[0])
            instruments = connection.execute(_INSTRUMENTS.format(table="sample")).fetchall()
            for (instrument,) in instruments:
                low, high = connection.execute(
                    "SELECT min(ts), max(ts) FROM sample WHERE instrument = ?", (instrument,)
                ).fetchone()
                span = (minute_of(low), minute_of(high) + 1)
                _set_pending(connection, instrument, [*_pending(connection, instrument), span])
            connection.execute(
                "INSERT INTO sample_minute_state (id, watermark) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET watermark = excluded.watermark",
                (watermark,),
            )
            return watermark

    def _follow(
        self, connection: sqlite3.Connection, watermark: int, horizon: int | None
    ) -> tuple[int, int]:
        """Note the minutes of up to `FEED_ROWS` rows past the watermark as pending."""
        (newest,) = connection.execute("SELECT coalesce(max(rowid), 0) FROM sample").fetchone()
        if newest <= watermark:
            return watermark, 0  # nothing new: no lock taken
        with _writing(connection):
            # Grouped by SQLite, which runs without the GIL: a Python loop over
            # 5,000 rows (about 1 us each) held it for milliseconds, and the
            # hub's forwarding loop, in another thread, waited for it. (S2x p99
            # did not move measurably: 3.4-5.3 ms before, 4.1-5.7 after.)
            groups = connection.execute(_FEED, (watermark, FEED_ROWS)).fetchall()
            if not groups:
                return watermark, 0
            touched: dict[str, set[int]] = {}
            for instrument, minute, _, _ in groups:
                touched.setdefault(instrument, set()).add(minute)
            for instrument, minutes in touched.items():
                ranges = [*_pending(connection, instrument), *runs(minutes)]
                if horizon is not None:
                    ranges = subtract(ranges, (-_FAR, horizon))
                _set_pending(connection, instrument, ranges)
            watermark = max(group[2] for group in groups)
            connection.execute("UPDATE sample_minute_state SET watermark = ?", (watermark,))
        return watermark, sum(group[3] for group in groups)

    def _roll_one(
        self, connection: sqlite3.Connection, watermark: int, closed: int, minutes: int
    ) -> tuple[int, int] | None:
        """Roll up the newest `minutes` closed pending minutes of one instrument."""
        found = connection.execute(
            "SELECT instrument, first_minute, min(end_minute, ?) AS e FROM sample_minute_pending"
            " WHERE first_minute < ? ORDER BY e DESC LIMIT 1",
            (closed, closed),
        ).fetchone()
        if found is None:
            return None
        instrument, first, end = found
        first = max(first, end - minutes)
        rows = connection.execute(
            _ROLL, {"instrument": instrument, "lo": first * 60, "hi": end * 60}
        ).fetchall()
        with _writing(connection):
            (now_mark,) = connection.execute("SELECT watermark FROM sample_minute_state").fetchone()
            if now_mark != watermark:
                return None  # another roll-up followed the feed meanwhile: next pass
            connection.execute(
                "DELETE FROM sample_minute WHERE instrument = ? AND minute >= ? AND minute < ?",
                (instrument, first, end),
            )
            connection.executemany(
                "INSERT INTO sample_minute (instrument, minute, channel, samples, minimum,"
                " maximum, total) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(instrument, *row) for row in rows],
            )
            ranges = subtract(_pending(connection, instrument), (first, end))
            _set_pending(connection, instrument, ranges)
        return end - first, sum(row[2] for row in rows)

    def _drop_below(self, connection: sqlite3.Connection, horizon: int) -> int:
        """Remove the summaries (and pending minutes) below the retention horizon."""
        row = connection.execute("SELECT horizon FROM sample_minute_state").fetchone()
        if row is not None and row[0] is not None and row[0] >= horizon:
            return 0
        dropped = 0
        for (instrument,) in connection.execute(
            _INSTRUMENTS.format(table="sample_minute")
        ).fetchall():
            while True:
                with _writing(connection):
                    # A day of minutes per transaction: a short hold of the lock.
                    (low,) = connection.execute(
                        "SELECT min(minute) FROM sample_minute WHERE instrument = ?",
                        (instrument,),
                    ).fetchone()
                    if low is None or low >= horizon:
                        break
                    dropped += connection.execute(
                        "DELETE FROM sample_minute WHERE instrument = ? AND minute < ?",
                        (instrument, min(horizon, low + 1440)),
                    ).rowcount
                time.sleep(BATCH_PAUSE_S)
        with _writing(connection):
            for (instrument,) in connection.execute(
                "SELECT DISTINCT instrument FROM sample_minute_pending"
            ).fetchall():
                ranges = subtract(_pending(connection, instrument), (-_FAR, horizon))
                _set_pending(connection, instrument, ranges)
            connection.execute("UPDATE sample_minute_state SET horizon = ?", (horizon,))
        return dropped


def history(
    path: Path,
    instrument: str,
    start: float,
    end: float,
    every: float,
    channels: tuple[str, ...],
) -> list[HistoryRow] | None:
    """History from the summaries where exact, the rest raw, in one snapshot; None: read raw."""
    with _connect(path) as connection:
        connection.execute("BEGIN")
        try:
            return _history(connection, instrument, start, end, every, channels)
        finally:
            connection.execute("COMMIT")


def _history(
    connection: sqlite3.Connection,
    instrument: str,
    start: float,
    end: float,
    every: float,
    channels: Sequence[str],
) -> list[HistoryRow] | None:
    state = connection.execute("SELECT watermark, horizon FROM sample_minute_state").fetchone()
    if state is None:
        return None
    watermark, horizon = state
    (newest,) = connection.execute("SELECT coalesce(max(rowid), 0) FROM sample").fetchone()
    if newest < watermark or newest - watermark > MAX_TAIL_ROWS:
        return None
    # "+instrument": by rowid, not the instrument's index (all its rows).
    tail = connection.execute(
        "SELECT ts FROM sample WHERE rowid > ? AND +instrument = ?", (watermark, instrument)
    ).fetchall()
    unsummarised = _pending(connection, instrument) + runs(minute_of(ts) for (ts,) in tail)
    if horizon is not None:
        unsummarised.append((-_FAR, horizon))
    reads = plan(start, end, every, unsummarised)
    if reads is None:
        return None
    params: dict[str, object] = {"instrument": instrument, "start": start, "every": every}
    summary_sql, raw_sql = _FROM_SUMMARIES, _RAW_CHANNELS
    if len(channels) == 1:
        raw_sql = _RAW_ONE_CHANNEL
        params |= {"channel": channels[0], "path": '$."' + channels[0] + '"'}
        summary_sql = summary_sql.replace("/* channels */", "AND s.channel = :channel")
    elif channels:
        names = {f"c{i}": name for i, name in enumerate(channels)}
        listed = ", ".join(":" + k for k in names)
        summary_sql = summary_sql.replace("/* channels */", f"AND s.channel IN ({listed})")
        raw_sql = raw_sql.replace("/* channels */", f"AND j.key IN ({listed})")
        params |= names
    parts = [
        connection.execute(summary_sql, params | {"ranges": json.dumps(reads.summary)}).fetchall()
    ]
    if reads.raw:
        parts.append(
            connection.execute(raw_sql, params | {"ranges": json.dumps(reads.raw)}).fetchall()
        )
    return merged_rows(parts)
