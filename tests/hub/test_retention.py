"""Retention removes exactly what is due, on SQLite and on a real PostgreSQL server.

SQLite removes every entry older than its kind's retention; PostgreSQL a
month at a time, once the whole month is older (store/retention.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from kleinmaelzung.hub.store import Record, postgres_schema
from kleinmaelzung.hub.store.retention import DAY_S, RetentionPolicy, pruner_for

from .log_backends import LogPlace, log_place, postgres_place, postgres_url
from .test_log_backends import samples_record

__all__ = ["log_place", "postgres_place", "postgres_url"]  # fixtures, used by name


def at(month: int, day: int) -> float:
    """Noon UTC of a day in 2026."""
    return datetime(2026, month, day, 12, tzinfo=UTC).timestamp()


NOW = at(6, 15)
#: Samples 60 days (due before 16 April noon), wire copies 30 (before 16 May
#: noon), the rest forever.
POLICY = RetentionPolicy(samples_days=60, wire_days=30)
#: One data frame (a wire copy and one sample) received on each of these days.
FRAMES = [at(1, 20), at(3, 15), at(4, 10), at(4, 20), at(5, 10), at(5, 20), at(6, 10)]


def record(ts: float, type_: str, direction: str = "in", instrument: str = "kiln-air") -> Record:
    message = msgspec.json.encode({"type": type_, "note": f"{type_} at {ts}"})
    return Record(ts, direction, "someone", type_, message, instrument)  # type: ignore[arg-type]


KEPT_FOREVER = [
    record(at(1, 20), "command"),
    record(at(1, 20), "reply", "out"),
    record(at(1, 20), "status", "out"),
    record(at(3, 15), "refused"),
    record(at(3, 15), "calibration"),
]


async def log_for_retention(place: LogPlace) -> None:
    store = place.store()
    await store.open()
    for seq, received in enumerate(FRAMES):
        store.append(samples_record("kiln-air", "r1", seq, [received - 1.0], received))
    store.append(record(at(3, 15), "ack", "out"))
    for entry in KEPT_FOREVER:
        store.append(entry)
    await store.flush()
    await store.close()


async def logged(place: LogPlace) -> tuple[list[tuple[str, float]], list[float]]:
    """(type, ts) of every traffic entry, and the receive time of every sample."""
    traffic = await place.sql("SELECT type, ts FROM traffic ORDER BY ts, type")
    samples = await place.sql("SELECT received FROM sample ORDER BY received")
    if place.kind == "postgresql":
        traffic = [(t, ts.timestamp()) for t, ts in traffic]
        samples = [(r.timestamp(),) for (r,) in samples]
    return [(t, ts) for t, ts in traffic], [r for (r,) in samples]


async def test_retention_removes_exactly_what_is_due(log_place: LogPlace) -> None:
    await log_for_retention(log_place)
    pruner = pruner_for(log_place.backend())
    assert pruner is not None

    report = await pruner.prune(POLICY, NOW)

    traffic, samples = await logged(log_place)
    kept_forever = sorted((e.type, e.ts) for e in KEPT_FOREVER)
    if log_place.kind == "sqlite":
        # Each entry older than its kind's retention, to the second.
        wire_kept = [at(5, 20), at(6, 10)]
        samples_kept = [at(4, 20), at(5, 10), at(5, 20), at(6, 10)]
        assert report.removed == {"wire": 6, "samples": 3}
        # The pages freed went back to the file system.
        assert await log_place.sql("PRAGMA freelist_count") == [(0,)]
    else:
        # A month once all of it is due: May's wire copies and April's
        # samples wait for the rest of their month.
        wire_kept = [at(5, 10), at(5, 20), at(6, 10)]
        samples_kept = [at(4, 10), at(4, 20), at(5, 10), at(5, 20), at(6, 10)]
        assert report.removed == {"wire": 5, "samples": 2}
        assert {"sample_2026_01", "sample_2026_03", "traffic_2026_01"} <= set(report.partitions)
    assert sorted(traffic) == sorted(kept_forever + [("data", ts) for ts in wire_kept])
    assert samples == samples_kept

    # Nothing more is due: a second pass removes nothing.
    again = await pruner.prune(POLICY, NOW)
    assert again.removed == {}
    assert await logged(log_place) == (traffic, samples)

    # What was kept is still found, and the log still takes new entries in
    # every month, rewritten or not.
    store = log_place.store()
    await store.open()
    commands = await store.query(instrument="kiln-air", types=("command", "reply"))
    assert [e.type for e in commands] == ["reply", "command"]
    store.append(samples_record("kiln-air", "r2", 0, [at(3, 16)], at(3, 16)))
    store.append(record(at(1, 21), "command"))
    await store.flush()
    assert [s.seq for s in await store.query_samples("kiln-air", at(3, 1), at(3, 31))] == [0]
    await store.close()


async def test_kinds_kept_for_a_while_go_when_due_and_forever_means_forever(
    log_place: LogPlace,
) -> None:
    await log_for_retention(log_place)
    pruner = pruner_for(log_place.backend())
    assert pruner is not None
    # Everything for 30 days but calibration steps, kept forever; nothing at all
    # is due a year before.
    policy = RetentionPolicy(
        samples_days=30, wire_days=30, commands_days=30, audit_days=30, calibration_days=0
    )
    assert (await pruner.prune(policy, at(1, 1))).removed == {}
    await pruner.prune(policy, at(12, 31))
    traffic, samples = await logged(log_place)
    assert traffic == [("calibration", at(3, 15))]
    assert samples == []


async def test_bookkeeping_keeps_the_newest_runs_and_recent_writers(log_place: LogPlace) -> None:
    store = log_place.store()
    await store.open()
    for number in range(1, 5):
        store.append(samples_record("balance", f"r{number}", 0, [NOW], NOW))
    store.append(samples_record("kiln-air", "r1", 0, [NOW], NOW))
    await store.flush()
    await store.close()
    # Runs r1..r4 of the balance last written 200, 100, 95 and 1 days ago;
    # the kiln's only run 200 days ago. One writer gone for two days, one
    # that committed an hour ago.
    ages = {("balance", "r1"): 200, ("balance", "r2"): 100, ("balance", "r3"): 95}
    ages |= {("balance", "r4"): 1, ("kiln-air", "r1"): 200}
    postgres = log_place.kind == "postgresql"
    update_seq = (
        "UPDATE instrument_seq SET updated = to_timestamp($1) WHERE instrument = $2 AND run = $3"
        if postgres
        else "UPDATE instrument_seq SET updated = ? WHERE instrument = ? AND run = ?"
    )
    for (instrument, run), days in ages.items():
        await log_place.sql(update_seq, NOW - days * DAY_S, instrument, run)
    insert_position = "INSERT INTO writer_position (writer, position, committed_at) VALUES" + (
        " ($1, 1, to_timestamp($2))" if postgres else " (?, 1, ?)"
    )
    await log_place.sql(insert_position, "gone", NOW - 2 * DAY_S)
    await log_place.sql(insert_position, "busy", NOW - 3600)

    pruner = pruner_for(log_place.backend())
    assert pruner is not None
    report = await pruner.prune(RetentionPolicy(), NOW)

    # The balance's two newest runs, and each instrument's newest: what an
    # agent restarted (or resending its spool) needs; r2 is older than the grace.
    seqs = await log_place.sql("SELECT instrument, run FROM instrument_seq")
    assert sorted(seqs) == [("balance", "r3"), ("balance", "r4"), ("kiln-air", "r1")]
    positions = await log_place.sql("SELECT writer FROM writer_position")
    assert sorted(positions) == [("busy",)]
    assert (report.seqs_removed, report.positions_removed) == (2, 1)


async def test_stats_show_rows_sizes_and_the_oldest_entry_per_kind(log_place: LogPlace) -> None:
    await log_for_retention(log_place)
    pruner = pruner_for(log_place.backend())
    assert pruner is not None
    stats = await pruner.stats(POLICY)
    kinds = {k.kind: k for k in stats.kinds}
    assert list(kinds) == ["samples", "wire", "commands", "audit", "calibration"]
    assert {k: (v.rows, v.oldest) for k, v in kinds.items()} == {
        "samples": (7, at(1, 20)),
        "wire": (8, at(1, 20)),
        "commands": (2, at(1, 20)),
        "audit": (2, at(1, 20)),
        "calibration": (1, at(3, 15)),
    }
    assert [k.retention_days for k in stats.kinds] == [60, 30, 0, 0, 0]
    assert all(k.bytes > 0 for k in stats.kinds)
    assert stats.total_bytes > sum(k.bytes for k in stats.kinds)
    assert stats.instrument_seqs == 1


async def test_a_postgres_log_of_version_4_gets_its_traffic_partitioned_by_month(
    postgres_place: LogPlace,
) -> None:
    # A log as hubs before retention left it: traffic in one table.
    await postgres_place.sql(f'CREATE SCHEMA "{postgres_place.schema}"')
    await postgres_place.script(postgres_schema.VERSION_TABLE)
    for number, migration in enumerate(postgres_schema.MIGRATIONS[:4], 1):
        await postgres_place.script(migration)
        await postgres_place.sql("INSERT INTO kmz_schema_version (version) VALUES ($1)", number)
    for ts in (at(1, 20), at(3, 15), at(3, 16)):
        await postgres_place.sql(
            "INSERT INTO traffic (ts, direction, peer, type, message)"
            " VALUES (to_timestamp($1), 'in', 'pi-1', 'data', '{}')",
            ts,
        )
    store = postgres_place.store()
    await store.open()
    store.append(record(at(3, 17), "command"))
    await store.flush()
    entries = await store.query(limit=10)
    await store.close()
    # The same ids, in their months' partitions; new ids continue after them.
    assert [(e.id, e.ts) for e in entries] == [
        (4, at(3, 17)),
        (3, at(3, 16)),
        (2, at(3, 15)),
        (1, at(1, 20)),
    ]
    partitions = await postgres_place.sql(
        "SELECT c.relname, count(*) FROM traffic t JOIN pg_class c ON c.oid = t.tableoid"
        " GROUP BY c.relname ORDER BY c.relname"
    )
    assert partitions == [("traffic_2026_01", 1), ("traffic_2026_03", 3)]
