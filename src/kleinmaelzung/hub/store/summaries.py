"""Per-minute summaries of the sample table, and history read from them.

A month of one channel at 1 Hz is 2.6 M samples: grouped by the database
from the sample table it took 4-11 s (benchmarks/history.py), far too long
for a plot. So a background task (`RollupRunner`, started beside retention
by `hub.log_retention`) keeps, per instrument, minute and numeric channel,
the count, min, max and sum of the samples (`sample_minute`), and history
with buckets of a minute or more reads those, merging them exactly:
counts and sums add, min and max of mins and maxes; the mean is the sum
over the count (equal to the database's own mean to float rounding).

Nothing is added to the writer's transaction. The roll-up follows the rows
the writer committed by a watermark, in small batches of its own:

- SQLite: the sample table's rowid (rows get ever larger rowids, in commit
  order: one writer at a time holds the file's lock);
- PostgreSQL: the id of the data frames in ``traffic`` (each committed with
  its samples). Ids come from a sequence, not in commit order when two hubs
  write: the roll-up reads the newest id under a SHARE lock on ``traffic``
  (held for a millisecond or so), when no writer's transaction is open, so
  every id up to it is committed.

Each pass (every `INTERVAL_S`) notes the minutes of the new rows as pending
(`sample_minute_pending`, ranges per instrument), advances the watermark,
then rolls the pending minutes that are closed (older than `MARGIN_S` by the
hub's clock) a batch at a time: it recomputes each from the sample table
(so a late sample, arriving for a minute already rolled up, just makes its
minute pending again and re-rolled) and replaces its summary.

History then takes a minute from its summary only where that is exact: the
minute lies wholly inside one bucket and inside the range, is not pending,
holds no row committed after the watermark, and is not below the retention
horizon; every other minute (the range's ends, a bucket edge inside a
minute, what is not rolled up yet) is read from the sample table, in the
same snapshot. With minute-aligned buckets that is two minutes at most; a
dashboard's 1,000 buckets over an arbitrary range cut about 1,000 minutes,
still 40 times fewer samples than the month.

Existing logs: the first pass notes every instrument's whole time span as
pending, and the same task rolls it up (newest first), without delaying the
hub's start; until then history reads the sample table as before.

Retention: summaries go with the samples they summarise (`horizon`): below
the retention cutoff plus `HORIZON_SLACK_S` there are none, and history
reads the few samples left there raw, so it always equals the raw answer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from .queries import HistoryRow
from .retention import DAY_S, RetentionPolicy

_log = logging.getLogger(__name__)

MINUTE_S = 60
#: Seconds between two passes. The rows written since the last pass are what
#: history must check beyond the watermark: ten seconds of them stay cheap.
INTERVAL_S = 10.0
#: A minute is rolled up once it ended this long ago (hub clock); a sample
#: arriving later just re-rolls its minute.
MARGIN_S = 30.0
#: Rows of the feed read per transaction, and samples per roll-up batch.
FEED_ROWS = 5000
BATCH_SAMPLES = 20_000
#: Pause between batches, so that the hub's writer gets the SQLite lock.
BATCH_PAUSE_S = 0.02
#: A pass ends after this long and the next starts at once: a backfill in a
#: worker thread never holds up the hub's shutdown for longer.
PASS_BUDGET_S = 2.0
#: History uses summaries only when the range holds this many whole minutes,
#: and only up to this many rows beyond the watermark (else it reads raw).
MIN_MINUTES = 10
MAX_TAIL_ROWS = 200_000
#: How far ahead of the hub an agent's clock may be for retention to stay
#: exact: samples received before the cutoff carry times up to this late.
HORIZON_SLACK_S = 3600.0
#: Sums kept per summary: `total` (sum), `samples` (count), min, max.
Aggregate = tuple[int, float, float, float]


def minute_of(ts: float) -> int:
    """The minute ``m`` with ``60 m <= ts < 60 m + 60``, by the comparisons SQL makes."""
    minute = math.floor(ts / MINUTE_S)
    if ts < minute * MINUTE_S:
        minute -= 1
    elif ts >= (minute + 1) * MINUTE_S:
        minute += 1
    return minute


def runs(minutes: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted minutes as half-open ranges ``[first, end)`` of consecutive ones."""
    out: list[tuple[int, int]] = []
    for minute in sorted(set(minutes)):
        if out and out[-1][1] == minute:
            out[-1] = (out[-1][0], minute + 1)
        else:
            out.append((minute, minute + 1))
    return out


def union(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Half-open ranges merged where they overlap or touch, sorted."""
    out: list[tuple[int, int]] = []
    for first, end in sorted(ranges):
        if out and first <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((first, end))
    return out


def subtract(ranges: list[tuple[int, int]], cut: tuple[int, int]) -> list[tuple[int, int]]:
    """`ranges` without the minutes of `cut`."""
    out = []
    for first, end in ranges:
        if end <= cut[0] or first >= cut[1]:
            out.append((first, end))
            continue
        if first < cut[0]:
            out.append((first, cut[0]))
        if end > cut[1]:
            out.append((cut[1], end))
    return out


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a history's samples are read: summaries by minute, the rest raw."""

    #: Minutes ``[first, end)`` read from the summaries.
    summary: list[tuple[int, int]]
    #: Time ranges ``[lo, hi)`` (seconds) read from the sample table.
    raw: list[tuple[float, float]]


def plan(
    since: float, until: float, every: float, unsummarised: Iterable[tuple[int, int]]
) -> Plan | None:
    """The plan for ``since <= ts < until`` in buckets of `every`; None: read all raw.

    `unsummarised`: minute ranges the summaries do not hold exactly (pending,
    written after the watermark, below the horizon).
    """
    if every < MINUTE_S:
        return None
    first = minute_of(since)
    if first * MINUTE_S < since:
        first += 1
    end = minute_of(until)  # minutes before `end` end by `until`
    if end - first < MIN_MINUTES:
        return None
    raw = [r for r in union(unsummarised) if r[1] > first and r[0] < end]
    # A minute cut by a bucket edge: the edges' minutes and their neighbours
    # (float rounding) checked by the same arithmetic the databases do.
    buckets = math.ceil((until - since) / every)
    edges = set()
    for k in range(1, buckets + 1):
        near = minute_of(since + k * every)
        for minute in (near - 1, near, near + 1):
            if first <= minute < end and not inside_one_bucket(minute, since, every):
                edges.add(minute)
    raw = union(raw + runs(edges))
    summary = [(first, end)]
    for cut in raw:
        summary = subtract(summary, cut)
    if not summary:
        return None
    reads: list[tuple[float, float]] = [(since, float(first * MINUTE_S))]
    for lo, hi in raw:
        reads.append((max(since, lo * MINUTE_S), min(until, hi * MINUTE_S)))
    if end * MINUTE_S < until:
        reads.append((end * MINUTE_S, until))
    return Plan(summary, merged_reads([r for r in reads if r[0] < r[1]]))


def inside_one_bucket(minute: int, since: float, every: float) -> bool:
    """Whether every time of `minute` falls in the bucket of its start.

    True iff ``60 m + 60 <= since + (b + 1) every``; in floats, so a sample's
    ``(ts - since) / every`` never rounds into the next bucket (ts ~ 1e9 s:
    the gap below the edge is 1e3 times the quotient's rounding).
    """
    bucket = math.floor((minute * MINUTE_S - since) / every)
    return (minute * MINUTE_S + MINUTE_S - since) / every <= bucket + 1


def merged_reads(reads: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Adjacent time ranges joined: fewer probes of the sample table."""
    out: list[tuple[float, float]] = []
    for lo, hi in sorted(reads):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def merged_rows(
    parts: Iterable[Iterable[tuple[int, str, int, float, float, float]]],
) -> list[HistoryRow]:
    """Rows (bucket, channel, count, min, max, sum) of several reads as history rows."""
    merged: dict[tuple[int, str], list[float]] = {}
    for rows in parts:
        for bucket, channel, count, low, high, total in rows:
            found = merged.get((bucket, channel))
            if found is None:
                merged[bucket, channel] = [count, low, high, total]
            else:
                found[0] += count
                found[1] = min(found[1], low)
                found[2] = max(found[2], high)
                found[3] += total
    return [
        HistoryRow(bucket, channel, int(n), low, high, total / n)
        for (bucket, channel), (n, low, high, total) in merged.items()
    ]


def horizon_minute(policy: RetentionPolicy, now: float, oldest_kept: float | None) -> int | None:
    """The first minute summaries may hold under `policy` at `now`; None: no limit.

    `oldest_kept`: where the backend's oldest samples start, if it drops them
    coarser than the cutoff (PostgreSQL: a month's partition at a time).
    """
    if not policy.interval_s or not policy.samples_days:
        return None
    cutoff = now - policy.samples_days * DAY_S
    if oldest_kept is not None:
        cutoff = min(cutoff, oldest_kept)
    return minute_of(cutoff + HORIZON_SLACK_S) + 1


class PassReport:
    """What one roll-up pass did."""

    def __init__(self) -> None:
        self.feed_rows = 0
        self.minutes = 0
        self.samples = 0
        self.dropped_below_horizon = 0
        #: Ended by its time budget with work left: the next pass follows at once.
        self.more = False


class Rollup(Protocol):
    """One backend's roll-up."""

    async def run_pass(self, now: float, horizon: int | None) -> PassReport:
        """Follow the feed, roll the closed pending minutes; batches, never stalling the writer.

        Ends after `PASS_BUDGET_S` with `PassReport.more` set if work is left.
        """

    async def oldest_kept(self) -> float | None:
        """Where the oldest samples' retention unit starts, if coarser than a sample."""


def rollup_for(backend: object) -> Rollup | None:
    """The roll-up of a store's backend; None for a backend without summaries."""
    from .sqlite import SqliteBackend

    if isinstance(backend, SqliteBackend):
        from .sqlite_summaries import SqliteRollup

        return SqliteRollup(backend.path)
    try:
        from .postgres import PostgresBackend
    except ImportError:  # the postgres extra is not installed
        return None
    if isinstance(backend, PostgresBackend):
        from .postgres_summaries import PostgresRollup

        return PostgresRollup(backend)
    return None


class RollupRunner:
    """Runs a roll-up pass every `INTERVAL_S`; a failed pass is logged and retried next time."""

    def __init__(
        self,
        rollup: Rollup,
        policy: RetentionPolicy,
        clock: Callable[[], float] = time.time,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.rollup = rollup
        self.policy = policy
        self.interval_s = interval_s
        self._clock = clock
        self.last: PassReport | None = None

    async def run_once(self) -> PassReport:
        """One pass now: follow the feed and roll up what is closed (`PASS_BUDGET_S` at most)."""
        now = self._clock()
        horizon = horizon_minute(self.policy, now, await self.rollup.oldest_kept())
        report = await self.rollup.run_pass(now, horizon)
        self.last = report
        if report.minutes > 1000:  # a backfill's progress, not every pass
            _log.info(
                "history summaries rolled up",
                extra={"minutes": report.minutes, "samples": report.samples},
            )
        return report

    async def run(self, first_delay_s: float = 0.0) -> None:
        """Pass after `first_delay_s`, then every interval, until cancelled."""
        await asyncio.sleep(first_delay_s)
        while True:
            more = False
            try:
                more = (await self.run_once()).more
            except Exception as exc:  # the top of a task: logged, tried again next pass
                _log.error("history roll-up failed", extra={"error": repr(exc)})
            await asyncio.sleep(BATCH_PAUSE_S if more else self.interval_s)

    async def catch_up(self) -> None:
        """Passes until nothing closed is left to roll up (tests, benchmarks)."""
        while (await self.run_once()).more:
            pass
