"""Per-minute summaries on PostgreSQL: the roll-up pass and history read from them (`summaries`).

The sample table has no row id (one would cost every write), so the feed is
the id of the data frames in ``traffic``, committed with their samples. Ids
come from a sequence, handed out before commit: with two hubs writing, a
smaller id may commit after a larger one. So the roll-up reads the newest id
under ``LOCK TABLE traffic IN SHARE MODE``, which waits for the writers'
open transactions (a few milliseconds; `LOCK_TIMEOUT_MS` at most, else the
pass is skipped) and is let go at once: every id up to it is committed.

Minutes are ``floor(extract(epoch FROM ts) / 60)`` (numeric: exact), the
same comparisons as history's reads of ``ts >= to_timestamp(60 m)``. The
frames' times are the agent's floats, stored rounded to the microsecond, so
the feed notes the minutes of ``ts`` +- 1 ms as pending.

Passes of two hubs on one database are kept apart by an advisory lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from .batch import sample_rows
from .queries import HistoryRow
from .summaries import (
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

if TYPE_CHECKING:
    from .postgres import PostgresBackend

LOCK_TIMEOUT_MS = 200
#: `pg_try_advisory_lock`'s key: one roll-up per database at a time.
ROLLUP_LOCK = 0x6B6D7A01
_FAR = 2**62
_SUMMARY_COLUMNS = ("instrument", "minute", "channel", "samples", "minimum", "maximum", "total")

_INSTRUMENTS = """
WITH RECURSIVE i(name) AS (
    SELECT min(instrument) FROM sample
    UNION ALL SELECT (SELECT min(instrument) FROM sample WHERE instrument > i.name)
    FROM i WHERE i.name IS NOT NULL)
SELECT name FROM i WHERE name IS NOT NULL
"""
_FEED = """
SELECT id, date_part('epoch', ts), message FROM traffic
WHERE id > $1 AND id <= $2 AND type = 'data' AND direction = 'in' ORDER BY id LIMIT $3
"""
_ROLL = """
SELECT floor(extract(epoch FROM s.ts) / 60)::bigint AS m, j.key, count(*),
    min(j.value::float8), max(j.value::float8), sum(j.value::float8)
FROM sample s, jsonb_each(s.channel_values) j
WHERE s.instrument = $1 AND s.ts >= to_timestamp($2) AND s.ts < to_timestamp($3)
    AND jsonb_typeof(j.value) = 'number'
GROUP BY m, j.key
"""
_SAMPLE_PARTITIONS = """
SELECT c.relname FROM pg_partition_tree('sample'::regclass) t JOIN pg_class c ON c.oid = t.relid
WHERE t.isleaf
"""
# LATERAL with OFFSET 0 (which keeps the planner from flattening it): one
# index probe per range. As a join, the planner read every sample of the
# instrument with the ranges as a join filter: minutes for a month.
_FROM_SUMMARIES = """
SELECT floor(((s.minute * 60)::float8 - $2::float8) / $3::float8)::bigint AS bucket, s.channel,
    sum(s.samples)::bigint, min(s.minimum), max(s.maximum), sum(s.total)
FROM unnest($4::bigint[], $5::bigint[]) AS r(lo, hi)
CROSS JOIN LATERAL (
    SELECT minute, channel, samples, minimum, maximum, total FROM sample_minute
    WHERE instrument = $1 AND minute >= r.lo AND minute < r.hi /* channels */ OFFSET 0
) s
GROUP BY bucket, s.channel
"""
_RAW_SAMPLES = """
FROM unnest($4::float8[], $5::float8[]) AS r(lo, hi)
CROSS JOIN LATERAL (
    SELECT ts, channel_values FROM sample
    WHERE instrument = $1 AND ts >= to_timestamp(r.lo) AND ts < to_timestamp(r.hi) OFFSET 0
) s
"""
_RAW_CHANNELS = f"""
SELECT floor((date_part('epoch', s.ts) - $2) / $3)::bigint AS bucket, j.key,
    count(*), min(j.value::float8), max(j.value::float8), sum(j.value::float8)
{_RAW_SAMPLES}
CROSS JOIN jsonb_each(s.channel_values) j
WHERE jsonb_typeof(j.value) = 'number' /* channels */
GROUP BY bucket, j.key
"""
_RAW_ONE_CHANNEL = f"""
SELECT bucket, $6::text, count(*), min(v), max(v), sum(v) FROM (
    SELECT floor((date_part('epoch', s.ts) - $2) / $3)::bigint AS bucket,
        (s.channel_values ->> $6)::float8 AS v
    {_RAW_SAMPLES}
    WHERE jsonb_typeof(s.channel_values -> $6) = 'number'
) b GROUP BY bucket
"""


#: Data frames decoded between two yields to the loop (about 0.3 ms of them).
TOUCH_SLICE = 100


def _touched(rows: Sequence[Any], into: dict[str, set[int]]) -> None:
    """Note the minutes of the samples in data frames (id, received, message)."""
    for _, received, message in rows:
        try:
            samples = sample_rows(message, received, None)
        except msgspec.DecodeError:
            continue  # the writer logged no samples of it either
        for instrument, _, _, ts, _, _ in samples:
            minutes = into.setdefault(instrument, set())
            minutes.add(minute_of(ts - 0.001))
            minutes.add(minute_of(ts + 0.001))


async def _pending(connection: Any, instrument: str) -> list[tuple[int, int]]:
    rows = await connection.fetch(
        "SELECT first_minute, end_minute FROM sample_minute_pending WHERE instrument = $1",
        instrument,
    )
    return [(row[0], row[1]) for row in rows]


async def _set_pending(connection: Any, instrument: str, ranges: list[tuple[int, int]]) -> None:
    await connection.execute("DELETE FROM sample_minute_pending WHERE instrument = $1", instrument)
    merged = union(ranges)
    if merged:
        await connection.executemany(
            "INSERT INTO sample_minute_pending (instrument, first_minute, end_minute)"
            " VALUES ($1, $2, $3)",
            [(instrument, first, end) for first, end in merged],
        )


class PostgresRollup:
    """Keeps the summaries of one PostgreSQL traffic log."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend

    async def oldest_kept(self) -> float | None:
        """Where the oldest month of samples starts: retention drops whole months."""
        from .postgres_schema import month_bounds

        connection = await self.backend.connect_aside()
        try:
            names = [row[0] for row in await connection.fetch(_SAMPLE_PARTITIONS)]
            for name in sorted(n for n in names if len(n) == 14 and n[6] == "_"):
                # The oldest month holding a sample (the writer makes months ahead).
                if await connection.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{name}")'):
                    return month_bounds((int(name[7:11]), int(name[12:14])))[0]
        finally:
            await connection.close()
        return None

    async def run_pass(self, now: float, horizon: int | None) -> PassReport:
        """Follow the feed, then roll up every closed pending minute, in batches."""
        report = PassReport()
        deadline = time.monotonic() + PASS_BUDGET_S
        connection = await self.backend.connect_aside(lock_timeout=str(LOCK_TIMEOUT_MS))
        try:
            if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", ROLLUP_LOCK):
                return report  # another hub's pass is running
            try:
                watermark = await self._follow(connection, horizon, report)
            except asyncpg.exceptions.LockNotAvailableError:
                return report  # the writer was busy: next pass
            if horizon is not None:
                report.dropped_below_horizon = await self._drop_below(connection, horizon)
            closed = minute_of(now - MARGIN_S)
            minutes = 60
            while (
                done := await self._roll_one(connection, watermark, closed, minutes)
            ) is not None:
                rolled, samples = done
                report.minutes += rolled
                report.samples += samples
                minutes = max(1, min(1440, BATCH_SAMPLES * rolled // max(samples, 1)))
                if time.monotonic() > deadline:
                    report.more = True
                    break
        finally:
            await connection.close()
        return report

    async def _stable_newest(self, connection: Any) -> int:
        """The newest traffic id, read when no writer's transaction is open."""
        async with connection.transaction():
            await connection.execute("LOCK TABLE traffic IN SHARE MODE")
            return int(await connection.fetchval("SELECT coalesce(max(id), 0) FROM traffic"))

    async def _follow(self, connection: Any, horizon: int | None, report: PassReport) -> int:
        """Start (backfill) if needed, then note the minutes of new frames as pending."""
        watermark = await connection.fetchval("SELECT watermark FROM sample_minute_state")
        if watermark is None:
            newest = await self._stable_newest(connection)
            async with connection.transaction():
                for (instrument,) in await connection.fetch(_INSTRUMENTS):
                    low, high = await connection.fetchrow(
                        "SELECT date_part('epoch', min(ts)), date_part('epoch', max(ts))"
                        " FROM sample WHERE instrument = $1",
                        instrument,
                    )
                    span = (minute_of(low - 0.001), minute_of(high + 0.001) + 1)
                    await _set_pending(
                        connection, instrument, [*await _pending(connection, instrument), span]
                    )
                await connection.execute(
                    "INSERT INTO sample_minute_state (id, watermark) VALUES (1, $1)", newest
                )
            return newest
        visible = await connection.fetchval("SELECT coalesce(max(id), 0) FROM traffic")
        if visible <= watermark:
            return int(watermark)  # nothing committed since (later ids are all larger)
        newest = await self._stable_newest(connection)
        while watermark < newest:
            async with connection.transaction():
                rows = await connection.fetch(_FEED, watermark, newest, FEED_ROWS)
                touched: dict[str, set[int]] = {}
                # On the hub's loop: a slice at a time, so that forwarding
                # never waits behind decoding 5,000 frames at once (10-15 ms
                # at 2-3 us a frame).
                for first in range(0, len(rows), TOUCH_SLICE):
                    _touched(rows[first : first + TOUCH_SLICE], touched)
                    await asyncio.sleep(0)
                for instrument, minutes in touched.items():
                    ranges = [*await _pending(connection, instrument), *runs(minutes)]
                    if horizon is not None:
                        ranges = subtract(ranges, (-_FAR, horizon))
                    await _set_pending(connection, instrument, ranges)
                watermark = rows[-1][0] if len(rows) == FEED_ROWS else newest
                await connection.execute("UPDATE sample_minute_state SET watermark = $1", watermark)
            report.feed_rows += len(rows)
        return int(watermark)

    async def _roll_one(
        self, connection: Any, watermark: int, closed: int, minutes: int
    ) -> tuple[int, int] | None:
        found = await connection.fetchrow(
            "SELECT instrument, first_minute, least(end_minute, $1) AS e"
            " FROM sample_minute_pending WHERE first_minute < $1 ORDER BY e DESC LIMIT 1",
            closed,
        )
        if found is None:
            return None
        instrument, first, end = found
        first = max(first, end - minutes)
        rows = await connection.fetch(_ROLL, instrument, first * 60.0, end * 60.0)
        async with connection.transaction():
            mark = await connection.fetchval("SELECT watermark FROM sample_minute_state")
            if mark != watermark:
                return None
            await connection.execute(
                "DELETE FROM sample_minute WHERE instrument = $1 AND minute >= $2 AND minute < $3",
                instrument,
                first,
                end,
            )
            if rows:
                await connection.copy_records_to_table(
                    "sample_minute",
                    records=[(instrument, *row) for row in rows],
                    columns=_SUMMARY_COLUMNS,
                )
            ranges = subtract(await _pending(connection, instrument), (first, end))
            await _set_pending(connection, instrument, ranges)
        return end - first, sum(row[2] for row in rows)

    async def _drop_below(self, connection: Any, horizon: int) -> int:
        known = await connection.fetchval("SELECT horizon FROM sample_minute_state")
        if known is not None and known >= horizon:
            return 0
        async with connection.transaction():
            status = await connection.execute(
                "DELETE FROM sample_minute WHERE minute < $1", horizon
            )
            for (instrument,) in await connection.fetch(
                "SELECT DISTINCT instrument FROM sample_minute_pending"
            ):
                ranges = subtract(await _pending(connection, instrument), (-_FAR, horizon))
                await _set_pending(connection, instrument, ranges)
            await connection.execute("UPDATE sample_minute_state SET horizon = $1", horizon)
        return int(status.rsplit(" ", 1)[-1])


async def history(
    connection: Any,
    instrument: str,
    start: float,
    end: float,
    every: float,
    channels: Sequence[str],
) -> list[HistoryRow] | None:
    """History from the summaries where exact, the rest raw, in one snapshot; None: read raw."""
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        state = await connection.fetchrow("SELECT watermark, horizon FROM sample_minute_state")
        if state is None:
            return None
        watermark, horizon = state
        newest = await connection.fetchval("SELECT coalesce(max(id), 0) FROM traffic")
        if newest - watermark > MAX_TAIL_ROWS:
            return None
        # The hub logs one instrument's samples per data frame (`traffic.samples`).
        tail = await connection.fetch(
            "SELECT id, date_part('epoch', ts), message FROM traffic WHERE instrument = $1"
            " AND id > $2 AND type = 'data' AND direction = 'in'",
            instrument,
            watermark,
        )
        touched: dict[str, set[int]] = {}
        _touched(tail, touched)
        unsummarised = await _pending(connection, instrument)
        unsummarised += runs(touched.get(instrument, ()))
        if horizon is not None:
            unsummarised.append((-_FAR, horizon))
        reads = plan(start, end, every, unsummarised)
        if reads is None:
            return None
        summary_sql, raw_sql = _FROM_SUMMARIES, _RAW_CHANNELS
        extra: list[object] = []
        if len(channels) == 1:
            raw_sql = _RAW_ONE_CHANNEL
            summary_sql = summary_sql.replace("/* channels */", "AND channel = $6")
            extra = [channels[0]]
        elif channels:
            summary_sql = summary_sql.replace("/* channels */", "AND channel = ANY($6)")
            raw_sql = raw_sql.replace("/* channels */", "AND j.key = ANY($6)")
            extra = [list(channels)]
        parts = [
            await connection.fetch(
                summary_sql,
                instrument,
                start,
                every,
                [r[0] for r in reads.summary],
                [r[1] for r in reads.summary],
                *extra,
            )
        ]
        if reads.raw:
            parts.append(
                await connection.fetch(
                    raw_sql,
                    instrument,
                    start,
                    every,
                    [r[0] for r in reads.raw],
                    [r[1] for r in reads.raw],
                    *extra,
                )
            )
    return merged_rows((tuple(row) for row in rows) for rows in parts)
