"""Querying the traffic log by every filter, paging it by keyset, and the history of a channel.

Every test runs on SQLite and on a real PostgreSQL server (`log_place`).
Expected answers are computed here, in Python, from what the test wrote.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import msgspec
import pytest

from kleinmaelzung.hub.store import LogWriter, Record
from kleinmaelzung.hub.store.queries import LogQuery, posix_regex

from .log_backends import LogPlace, log_place, postgres_url

__all__ = ["log_place", "postgres_url"]  # fixtures, used by name

#: 2026-11-01 00:00 UTC.
NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC).timestamp()


def data_record(instrument: str, seq: int, ts: float, values: dict[str, object]) -> Record:
    """An inbound data frame of one sample, received 0.25 s after its reading."""
    frame = msgspec.json.encode(
        {
            "type": "data",
            "samples": [{"instrument": instrument, "seq": seq, "ts": ts, "values": values}],
        }
    )
    return Record(
        ts + 0.25,
        "in",
        "pi-1",
        "data",
        frame,
        instrument,
        "client-1/dash@olga,client-2/kmz-watch",
        ("pi-1/r1", {instrument: seq}),
        "r1",
    )


def traffic() -> list[Record]:
    """A morning of mixed traffic, one entry a minute, in log order."""
    records: list[Record] = []
    for minute in range(60):
        ts = NOVEMBER + 60.0 * minute
        kind = minute % 4
        if kind == 0:
            records.append(data_record("kiln-air", minute, ts, {"temperature": 20.0 + minute}))
        elif kind == 1:
            records.append(data_record("kiln-water", minute, ts, {"temperature": 10.0}))
        elif kind == 2:
            command = {
                "type": "command",
                "id": f"c{minute}",
                "instrument": "kiln-air",
                "name": "set_setpoint",
                "args": {"value": minute},
            }
            records.append(
                Record(
                    ts,
                    "in",
                    "client-3/kmz-send@Ada",
                    "command",
                    msgspec.json.encode(command),
                    "kiln-air",
                )
            )
        else:
            reply = {"type": "reply", "id": f"c{minute - 1}", "ok": minute % 8 != 3, "result": None}
            records.append(
                Record(
                    ts,
                    "out",
                    "client-3/kmz-send@Ada",
                    "reply",
                    msgspec.json.encode(reply),
                    "balance",
                )
            )
    return records


async def logged(place: LogPlace) -> tuple[LogWriter, list[tuple[int, Record]]]:
    """An open store holding `traffic()`, and each record with the id it got."""
    store = place.store()
    await store.open()
    records = traffic()
    for record in records:
        store.append(record)
    await store.flush()
    entries = await store.query(limit=1000)
    ids = sorted(e.id for e in entries)
    assert len(ids) == len(records)
    return store, list(zip(ids, records, strict=True))


FILTERS: list[tuple[str, LogQuery]] = [
    ("since", LogQuery(since=NOVEMBER + 1800.0)),
    ("until", LogQuery(until=NOVEMBER + 600.0)),
    ("since-until", LogQuery(since=NOVEMBER + 600.0, until=NOVEMBER + 1200.0)),
    ("instrument", LogQuery(instrument="kiln-air")),
    ("instrument-glob", LogQuery(instrument="kiln-*")),
    ("instrument-set", LogQuery(instrument="kiln-[!a]*")),
    ("peer", LogQuery(peer="client-3/kmz-send@Ada")),
    ("peer-glob-recipient", LogQuery(peer="client-1/*")),
    ("peer-not-prefix", LogQuery(peer="client-3")),
    ("direction", LogQuery(direction="out")),
    ("types", LogQuery(types=("command", "reply"))),
    ("text", LogQuery(text="SET_SETPOINT")),
    ("text-literal-percent", LogQuery(text='"ok":false')),
    ("text-wildcard-is-literal", LogQuery(text="set%point")),
    (
        "combined",
        LogQuery(instrument="kiln-air", types=("data",), since=NOVEMBER + 1200.0, text="temp"),
    ),
]


#: Filters that must find nothing in `traffic()`.
NOTHING = {"peer-not-prefix", "text-wildcard-is-literal"}


def expected(query: LogQuery, logged: list[tuple[int, Record]]) -> list[int]:
    """The ids `query` should find, computed from what was written, newest first."""
    import fnmatch

    found = []
    for id_, r in logged:
        names = r.peer.split(",") + (r.delivered_to or "").split(",")
        if query.since is not None and r.ts < query.since:
            continue
        if query.until is not None and r.ts >= query.until:
            continue
        if query.instrument is not None and not fnmatch.fnmatchcase(
            r.instrument or "", query.instrument
        ):
            continue
        if query.peer is not None and not any(fnmatch.fnmatchcase(n, query.peer) for n in names):
            continue
        if query.direction is not None and r.direction != query.direction:
            continue
        if query.types and r.type not in query.types:
            continue
        if query.text is not None and query.text.lower() not in r.message.decode().lower():
            continue
        found.append(id_)
    return sorted(found, reverse=True)


@pytest.mark.parametrize(("name", "query"), FILTERS, ids=[name for name, _ in FILTERS])
async def test_each_filter_finds_what_it_should(
    log_place: LogPlace, name: str, query: LogQuery
) -> None:
    store, written = await logged(log_place)
    try:
        want = expected(query, written)
        # A peer is matched as a whole name: "client-3" is no prefix of "client-3/...".
        # "%" and "_" in the text are literal.
        assert bool(want) is (name not in NOTHING), name
        assert len(want) < len(written)
        found = await store.query_log(query, limit=1000)
        assert [e.id for e in found] == want
    finally:
        await store.close()


async def test_the_cursor_walks_every_page_once_in_both_orders(log_place: LogPlace) -> None:
    store, written = await logged(log_place)
    try:
        for query in (LogQuery(), LogQuery(instrument="kiln-*", since=NOVEMBER + 300.0)):
            want = expected(query, written)
            for oldest_first in (False, True):
                pages: list[list[int]] = []
                cursor: int | None = None
                while True:
                    page = await store.query_log(
                        LogQuery(
                            **{**_fields(query), "after_id": cursor, "oldest_first": oldest_first}
                        ),
                        limit=7,
                    )
                    if not page:
                        break
                    pages.append([e.id for e in page])
                    cursor = page[-1].id
                assert all(len(p) == 7 for p in pages[:-1])
                walked = [i for p in pages for i in p]
                assert walked == (sorted(want) if oldest_first else want)
        # An entry logged while paging shows up on the oldest-first walk's last page.
        page = await store.query_log(LogQuery(oldest_first=True, after_id=written[-1][0]), limit=7)
        assert page == []
        store.append(data_record("kiln-air", 99, NOVEMBER + 4000.0, {"temperature": 1.0}))
        await store.flush()
        page = await store.query_log(LogQuery(oldest_first=True, after_id=written[-1][0]), limit=7)
        assert [e.type for e in page] == ["data"]
    finally:
        await store.close()


def _fields(query: LogQuery) -> dict[str, object]:
    return {name: getattr(query, name) for name in LogQuery.__slots__}


def test_globs_become_anchored_regular_expressions() -> None:
    assert posix_regex("kiln-*") == "^kiln-.*$"
    assert posix_regex("k?ln.[!ab]") == "^k.ln\\.[^ab]$"
    assert posix_regex("client-*@olga", anchored=False, stop=",") == "client-[^,]*@olga"


# --- history ---------------------------------------------------------------------


async def test_history_buckets_are_computed_by_the_database(log_place: LogPlace) -> None:
    store = log_place.store()
    await store.open()
    chooser = random.Random(13)
    # 2 hours of a kiln at irregular times; a flag and a text beside the numbers,
    # an integer channel, and a channel that appears only later.
    samples: list[tuple[float, dict[str, object]]] = []
    ts = NOVEMBER - 600.0  # some before the range
    seq = 0
    while ts < NOVEMBER + 7800.0:
        values: dict[str, object] = {
            "temperature": round(chooser.uniform(15, 90), 3),
            "power": chooser.randrange(0, 100),
            "stable": chooser.random() < 0.5,
            "mode": "auto",
        }
        if ts > NOVEMBER + 3600.0:
            values["humidity"] = round(chooser.uniform(30, 60), 2)
        samples.append((ts, values))
        store.append(data_record("kiln-air", seq, ts, values))
        # Another instrument's samples never count.
        store.append(data_record("kiln-water", seq, ts, {"temperature": -1000.0}))
        seq += 1
        ts += chooser.choice([0.5, 7.25, 13.0, 31.5])
    await store.flush()
    start, end, every = NOVEMBER, NOVEMBER + 7200.0, 300.0

    def computed(
        channels: set[str] | None,
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
        return {key: (len(v), min(v), max(v), sum(v) / len(v)) for key, v in buckets.items()}

    for channels in (None, {"temperature"}, {"temperature", "humidity"}):
        rows = await store.history("kiln-air", start, end, every, sorted(channels or ()))
        got = {(r.bucket, r.channel): (r.samples, r.minimum, r.maximum, r.mean) for r in rows}
        want = computed(channels)
        assert set(got) == set(want)
        assert len({b for b, _ in want}) == 24  # 2 h in 5 min buckets
        for key, (count, low, high, mean) in want.items():
            assert got[key][:3] == (count, low, high), key
            assert got[key][3] == pytest.approx(mean, rel=1e-12), key
    assert await store.history("kiln-air", end + 3600.0, end + 3660.0, every) == []
    assert await store.history("nothing-here", start, end, every) == []
    await store.close()


async def test_samples_stream_oldest_first_in_chunks_and_are_counted(log_place: LogPlace) -> None:
    store = log_place.store()
    await store.open()
    for seq in range(25):
        store.append(data_record("balance", seq, NOVEMBER + seq, {"mass": seq / 10}))
    await store.flush()
    assert await store.count_samples("balance", NOVEMBER + 5, NOVEMBER + 20) == 15
    chunks = [
        chunk
        async for chunk in store.stream_samples(
            "balance", NOVEMBER + 5, NOVEMBER + 20, chunk_rows=4
        )
    ]
    assert [len(c) for c in chunks] == [4, 4, 4, 3]
    rows = [row for chunk in chunks for row in chunk]
    assert [(r.ts, r.seq, r.run) for r in rows] == [(NOVEMBER + s, s, "r1") for s in range(5, 20)]
    assert msgspec.json.decode(rows[0].values) == {"mass": 0.5}
    await store.close()
