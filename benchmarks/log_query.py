"""Query time of "one instrument's last hour" over a traffic log of 10 million sample rows.

    python benchmarks/log_query.py [--rows 10000000] [--backends sqlite,postgresql]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--queries 200] [--keep DIR]

Builds the log as the hub writes it (a data message per ten samples, each a
traffic row plus its sample rows, through the backends' own `write`), then
times `Store.query_samples` for the newest hour of a random instrument:
the full path a history view takes, decoding included. The PostgreSQL log
goes to a schema of its own (kmz_bench), dropped at the end.

The shape: 40 instruments at 1 Hz, so 10M rows span about 70 hours, across
a month boundary (two partitions in PostgreSQL), and the last hour of one
instrument is 3600 samples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from kleinmaelzung.hub.store import LogBackend, LogWriter, Record, SqliteBackend
from kleinmaelzung.hub.store.batch import Batch

INSTRUMENTS = 40
SAMPLES_PER_FRAME = 10
FRAMES_PER_BATCH = 500
#: The log ends two days into November: it starts in October.
END = datetime(2026, 11, 2, 22, tzinfo=UTC).timestamp()


def frames(rows: int, instruments: int = INSTRUMENTS) -> list[Record]:
    """Data records, oldest first, as the hub logs them (hub time 20 ms after the reading)."""
    seconds = rows // instruments
    start = END - seconds
    encoder = msgspec.json.Encoder()
    records = []
    for first in range(0, seconds, SAMPLES_PER_FRAME):
        for n in range(instruments):
            instrument = f"kiln-{n:02d}"
            samples = [
                {
                    "instrument": instrument,
                    "seq": second,
                    "ts": start + second,
                    "values": {"temperature": 20.0 + (second % 600) / 10, "humidity": 40.5},
                }
                for second in range(first, min(first + SAMPLES_PER_FRAME, seconds))
            ]
            last = min(first + SAMPLES_PER_FRAME, seconds) - 1
            records.append(
                Record(
                    start + last + 0.02,
                    "in",
                    "pi-1",
                    "data",
                    encoder.encode({"type": "data", "samples": samples}),
                    instrument,
                    "client-1/dashboard",
                    ("pi-1/r1", {instrument: last}),
                    "r1",
                )
            )
    return records


def fill(backend: LogBackend, rows: int, instruments: int = INSTRUMENTS) -> float:
    """Write `rows` sample rows through the backend; returns the seconds it took."""
    backend.open()
    started = time.perf_counter()
    records = frames(rows, instruments)
    for i in range(0, len(records), FRAMES_PER_BATCH):
        backend.write(Batch.of(list(records[i : i + FRAMES_PER_BATCH])))
        if i % (FRAMES_PER_BATCH * 200) == 0:
            print(f"  {i * SAMPLES_PER_FRAME:>11,} rows", file=sys.stderr, flush=True)
    took = time.perf_counter() - started
    backend.close()
    return took


async def time_queries(store: LogWriter, queries: int) -> dict[str, float]:
    """p50 and p99 in ms of the newest hour of a random instrument, and rows per query."""
    await store.open()
    chooser = random.Random(7)
    times = []
    rows = 0
    for i in range(queries + 10):
        instrument = f"kiln-{chooser.randrange(INSTRUMENTS):02d}"
        started = time.perf_counter()
        found = await store.query_samples(instrument, END - 3600.0, END + 1.0)
        took = time.perf_counter() - started
        if i >= 10:  # the first few warm the cache and the connections
            times.append(took * 1000)
            rows = len(found)
    await store.close()
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[int(len(times) * 0.99) - 1], 2),
        "rows_per_query": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="folder for the SQLite file (default: temporary)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        for kind in args.backends.split(","):
            backend: LogBackend
            if kind == "sqlite":
                path = folder / "bench.sqlite3"
                path.unlink(missing_ok=True)
                backend = SqliteBackend(path)
            else:
                from kleinmaelzung.hub.store.postgres import PostgresBackend

                backend = PostgresBackend(f"{args.postgres}?schema=kmz_bench")
                _drop_schema(args.postgres)
            print(f"{kind}: writing {args.rows:,} sample rows", file=sys.stderr)
            fill_s = fill(backend, args.rows)
            result = asyncio.run(time_queries(LogWriter(backend), args.queries))
            result["fill_rows_per_s"] = round(args.rows / fill_s)
            results[kind] = result
            print(f"{kind}: {result}", file=sys.stderr)
            if kind != "sqlite":
                _drop_schema(args.postgres)
    print(json.dumps(results, indent=2))


def _drop_schema(url: str) -> None:
    import asyncpg

    async def drop() -> None:
        connection = await asyncpg.connect(url)
        await connection.execute("DROP SCHEMA IF EXISTS kmz_bench CASCADE")
        await connection.close()

    asyncio.run(drop())


if __name__ == "__main__":
    main()
