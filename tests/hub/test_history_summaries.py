"""History read from per-minute summaries equals history computed from every sample.

Every test runs on SQLite and on a real PostgreSQL server (`log_place`).
Expected answers are computed here, in Python, from what the test wrote; the
roll-up runs as the hub runs it (`RollupRunner`), with the clock the test sets.
"""

from __future__ import annotations

import math
import random
import sqlite3
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kleinmaelzung.hub.store import LogWriter, sqlite_summaries
from kleinmaelzung.hub.store.retention import DAY_S, RetentionPolicy
from kleinmaelzung.hub.store.summaries import RollupRunner, minute_of, plan, rollup_for

from .log_backends import LogPlace, log_place, postgres_url
from .test_log_queries import data_record

__all__ = ["log_place", "postgres_url"]  # fixtures, used by name

#: 2026-11-01 00:00 UTC.
NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
Samples = list[tuple[float, dict[str, object]]]


def write(store: LogWriter, samples: Samples, first_seq: int = 0) -> None:
    for seq, (ts, values) in enumerate(samples, first_seq):
        store.append(data_record("kiln-air", seq, ts, values))
        store.append(data_record("kiln-water", seq, ts, {"temperature": -1000.0}))


def morning(chooser: random.Random, start: float, end: float) -> Samples:
    """Irregular samples (quarter seconds: exact on both backends) with mixed channels."""
    samples: Samples = []
    ts = start
    while ts < end:
        values: dict[str, object] = {
            "temperature": round(chooser.uniform(15, 90), 3),
            "power": chooser.randrange(0, 100),
            "stable": chooser.random() < 0.5,
            "mode": "auto",
        }
        if ts > start + 3600.0:
            values["humidity"] = round(chooser.uniform(30, 60), 2)
        samples.append((ts, values))
        ts += chooser.choice([0.25, 2.5, 7.25, 13.0])
    return samples


def computed(
    samples: Samples, start: float, end: float, every: float, channels: set[str] | None
) -> dict[tuple[int, str], tuple[int, float, float, float]]:
    buckets: dict[tuple[int, str], list[float]] = {}
    for ts, values in samples:
        if not start <= ts < end:
            continue
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if channels is None or name in channels:
                bucket = math.floor((ts - start) / every)
                buckets.setdefault((bucket, name), []).append(float(value))
    return {key: (len(v), min(v), max(v), math.fsum(v) / len(v)) for key, v in buckets.items()}


async def assert_history(
    store: LogWriter, samples: Samples, start: float, end: float, every: float
) -> None:
    for channels in (None, {"temperature"}, {"temperature", "humidity"}):
        rows = await store.history("kiln-air", start, end, every, sorted(channels or ()))
        got = {(r.bucket, r.channel): (r.samples, r.minimum, r.maximum, r.mean) for r in rows}
        want = computed(samples, start, end, every, channels)
        assert set(got) == set(want), (start, end, every, channels)
        for key, (count, low, high, mean) in want.items():
            assert got[key][:3] == (count, low, high), key
            assert got[key][3] == pytest.approx(mean, rel=1e-12), key


async def summary_rows(place: LogPlace) -> int:
    return int((await place.sql("SELECT count(*) FROM sample_minute"))[0][0])


def runner(store: LogWriter, now: float, policy: RetentionPolicy | None = None) -> RollupRunner:
    rollup = rollup_for(store.backend)
    assert rollup is not None
    return RollupRunner(rollup, policy or RetentionPolicy(), clock=lambda: now)


#: Ranges and buckets: minute-aligned, edges inside minutes, one bucket, a
#: range starting and ending mid-minute.
QUERIES = [
    (NOVEMBER, NOVEMBER + 3 * 3600.0, 300.0),
    (NOVEMBER + 17.25, NOVEMBER + 3 * 3600.0 - 41.5, 437.75),
    (NOVEMBER + 600.0, NOVEMBER + 9000.0, 8400.0),
    (NOVEMBER - 3600.0, NOVEMBER + 4 * 3600.0, 61.0),
]


async def test_summaries_give_the_raw_answer_including_late_samples(log_place: LogPlace) -> None:
    store = log_place.store()
    await store.open()
    chooser = random.Random(21)
    samples = morning(chooser, NOVEMBER - 300.0, NOVEMBER + 3 * 3600.0)
    write(store, samples)
    await store.flush()
    for start, end, every in QUERIES:  # before any roll-up: from the samples
        await assert_history(store, samples, start, end, every)

    # The first pass of a log that has samples already: its backfill.
    await runner(store, NOVEMBER + 4 * 3600.0).catch_up()
    assert await summary_rows(log_place) > 0
    assert plan(NOVEMBER, NOVEMBER + 3 * 3600.0, 300.0, []) is not None
    for start, end, every in QUERIES:
        await assert_history(store, samples, start, end, every)

    # Late samples in minutes already rolled up: counted before the next pass
    # (read raw, beyond the watermark) and after it (re-rolled).
    late: Samples = [
        (NOVEMBER + 1800.0 + 0.25 * i, {"temperature": 1000.0 + i, "power": -5}) for i in range(8)
    ]
    late.append((NOVEMBER + 3599.75, {"temperature": -40.0}))
    write(store, late, first_seq=len(samples))
    await store.flush()
    samples += late
    for start, end, every in QUERIES:
        await assert_history(store, samples, start, end, every)
    await runner(store, NOVEMBER + 4 * 3600.0).catch_up()
    for start, end, every in QUERIES:
        await assert_history(store, samples, start, end, every)

    # The answers above came from the summaries: altered, they show.
    await log_place.sql("UPDATE sample_minute SET maximum = 1e9")
    rows = await store.history("kiln-air", *QUERIES[0])
    assert max(r.maximum for r in rows) == 1e9

    # An empty range, and an instrument without samples.
    assert await store.history("kiln-air", NOVEMBER + 86400.0, NOVEMBER + 90000.0, 60.0) == []
    assert await store.history("nothing-here", NOVEMBER, NOVEMBER + 3 * 3600.0, 60.0) == []
    await store.close()


async def test_a_bucket_straddles_the_rolled_up_boundary(log_place: LogPlace) -> None:
    store = log_place.store()
    await store.open()
    samples = morning(random.Random(5), NOVEMBER, NOVEMBER + 2 * 3600.0)
    write(store, samples)
    await store.flush()
    # The hub's clock in the middle of the data: later minutes are not closed yet.
    await runner(store, NOVEMBER + 3600.0 + 1234.0).catch_up()
    rolled = await log_place.sql("SELECT max(minute) FROM sample_minute")
    boundary = (int(rolled[0][0]) + 1) * 60.0
    assert NOVEMBER + 3600.0 < boundary < NOVEMBER + 2 * 3600.0
    for start, end, every in [
        (NOVEMBER, NOVEMBER + 2 * 3600.0, 600.0),
        (boundary - 300.0, boundary + 300.0, 600.0),  # one bucket across it
        (NOVEMBER + 30.5, NOVEMBER + 7199.5, 900.25),
    ]:
        await assert_history(store, samples, start, end, every)
    await store.close()


async def test_summaries_go_with_the_samples_retention_removes(log_place: LogPlace) -> None:
    store = log_place.store()
    await store.open()
    samples = morning(random.Random(8), NOVEMBER, NOVEMBER + 3 * 3600.0)
    write(store, samples)
    await store.flush()
    # Samples kept a day, and "now" a day and an hour and a half after the
    # first: the horizon (cutoff plus an hour of slack) cuts the data. On
    # PostgreSQL the cutoff is where the oldest month kept starts (retention
    # drops a month at a time): November's first hour goes.
    now = NOVEMBER + DAY_S + 5400.0
    await runner(store, now, RetentionPolicy(samples_days=1.0)).catch_up()
    (low,) = (await log_place.sql("SELECT min(minute) FROM sample_minute"))[0]
    cutoff = NOVEMBER + 5400.0 if log_place.kind == "sqlite" else NOVEMBER
    assert low * 60.0 == cutoff + 3600.0 + 60.0
    for start, end, every in QUERIES:
        await assert_history(store, samples, start, end, every)
    await store.close()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-1e11, max_value=1e11, allow_nan=False),
            # Right at and around minute boundaries, where rounding bites.
            st.integers(-(10**9), 10**9).map(lambda m: m * 60.0),
            st.integers(-(10**9), 10**9).map(lambda m: math.nextafter(m * 60.0, -math.inf)),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_the_feed_notes_each_sample_in_the_minute_minute_of_names(times: list[float]) -> None:
    # The roll-up groups new samples by minute in SQL (without the GIL); the
    # minutes must be exactly the ones history reads them back by.
    with sqlite3.connect(":memory:") as connection:
        connection.execute("CREATE TABLE sample (instrument TEXT, ts REAL)")
        connection.executemany("INSERT INTO sample VALUES ('i', ?)", [(t,) for t in times])
        fed = connection.execute(sqlite_summaries._FEED, (0, len(times))).fetchall()
    assert {minute for _, minute, _, _ in fed} == {minute_of(t) for t in times}
    assert sum(count for _, _, _, count in fed) == len(times)
    assert max(newest for _, _, newest, _ in fed) == len(times)
