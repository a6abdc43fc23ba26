"""History of one channel over 30 days at 1 Hz in 1,000 buckets, and an export of 1 million rows.

    python benchmarks/history.py [--backends sqlite,postgresql]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--days 30] [--export-rows 1000000]

Builds the log with `log_query.fill` (the hub's own write path) for one
instrument at 1 Hz over `--days` days, then measures on each backend:

- history: `Store.history` of one channel over the whole range cut into
  1,000 buckets (what a dashboard asks for a month's plot), and of every
  channel; median and best of 3, and the Python side's peak memory
  (tracemalloc, in a run of its own; the database's memory is not counted).
  First once from the sample table (``raw_s``: before the roll-up), then the
  roll-up of the whole log into per-minute summaries as the hub's background
  task does it on an older log (``rollup_s``), then from the summaries. The
  1,000 buckets are 43.2 minutes wide, so about 1,000 minutes cut by a
  bucket edge are read raw; ``one_channel_aligned`` asks 720 buckets of
  an hour, whose edges fall on minutes;
- export: `kmz export`'s path (a hub on 127.0.0.1, the client writing the
  file) of the first `--export-rows` rows to CSV and to Parquet: wall time,
  rows/s, and the peak memory of hub and client together (tracemalloc in a
  second, untimed run; both run in this process).

Not a test: figures vary with the machine; compare backends within a run.
The PostgreSQL log goes to a schema of its own (kmz_bench_history), dropped
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from log_query import END, fill

from kleinmaelzung.client import export
from kleinmaelzung.hub import HubConfig, start_hub
from kleinmaelzung.hub.store import LogBackend, LogWriter, SqliteBackend
from kleinmaelzung.hub.store.batch import Batch, SaveInstrument
from kleinmaelzung.hub.store.retention import RetentionPolicy
from kleinmaelzung.hub.store.summaries import RollupRunner, rollup_for

INSTRUMENT = "kiln-00"
SCHEMA = "kmz_bench_history"
BUCKETS = 1000
RUNS = 3


async def measure(make: Callable[[], Awaitable[Any]]) -> tuple[float, int, Any]:
    """Seconds of one awaited call, then the tracemalloc peak (bytes) of a second one.

    Two calls: tracing every allocation slows Python code 2-4x, which would
    make the time the tracer's.
    """
    started = time.perf_counter()
    result = await make()
    took = time.perf_counter() - started
    tracemalloc.start()
    try:
        await make()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return took, peak, result


async def time_history(backend: LogBackend, start: float, end: float) -> dict[str, Any]:
    store = LogWriter(backend)
    await store.open()
    every = (end - start) / BUCKETS
    figures: dict[str, Any] = {}
    cases = (
        ("one_channel", ["temperature"], every),
        ("all_channels", [], every),
        ("one_channel_aligned", ["temperature"], 3600.0),
    )
    try:
        raw: dict[str, float] = {}
        for label, channels, width in cases[:2]:
            started = time.perf_counter()
            await store.history(INSTRUMENT, start, end, width, channels)
            raw[label] = round(time.perf_counter() - started, 3)
        rollup = rollup_for(backend)
        assert rollup is not None
        started = time.perf_counter()
        await RollupRunner(rollup, RetentionPolicy(), clock=lambda: end + 3600.0).catch_up()
        figures["rollup_s"] = round(time.perf_counter() - started, 2)
        for label, channels, every in cases:
            times = []
            for _ in range(RUNS):
                started = time.perf_counter()
                found = await store.history(INSTRUMENT, start, end, every, channels)
                times.append(time.perf_counter() - started)
            tracemalloc.start()
            try:
                await store.history(INSTRUMENT, start, end, every, channels)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            figures[label] = {
                "raw_s": raw.get(label),
                "median_s": round(statistics.median(times), 3),
                "best_s": round(min(times), 3),
                "rows_returned": len(found),
                "python_peak_mib": round(peak / 2**20, 2),
            }
    finally:
        await store.close()
    return figures


async def time_export(config: HubConfig, start: float, rows: int, folder: Path) -> dict[str, Any]:
    running = await start_hub(config)
    figures: dict[str, Any] = {}
    try:
        for output in ("csv", "parquet"):
            path = folder / f"export.{output}"
            took, peak, result = await measure(
                lambda o=output, p=path: export(  # type: ignore[misc]
                    running.url,
                    p,
                    instrument=INSTRUMENT,
                    since=start,
                    until=start + rows,
                    format=o,
                )
            )
            figures[output] = {
                "rows": result.rows,
                "seconds": round(took, 2),
                "rows_per_s": round(result.rows / took),
                "peak_mib_hub_and_client": round(peak / 2**20, 1),
                "file_mib": round(path.stat().st_size / 2**20, 1),
            }
            path.unlink()
    finally:
        await running.stop()
    return figures


def remember_instrument(backend: LogBackend) -> None:
    """Make the hub list the instrument (its channels name the export's columns)."""
    info = {
        "id": INSTRUMENT,
        "kind": "kiln",
        "channels": [{"name": "temperature", "unit": "°C"}, {"name": "humidity", "unit": "%"}],
    }
    backend.open()
    backend.write(Batch.of([SaveInstrument(INSTRUMENT, "pi-1", json.dumps(info), None)]))
    backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--export-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    rows = args.days * 86400
    start = END - rows
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for kind in args.backends.split(","):
            config = HubConfig(host="127.0.0.1", port=0, data_dir=folder / kind, name="bench")
            if kind != "sqlite":
                _drop_schema(args.postgres)
                config = HubConfig(
                    host="127.0.0.1",
                    port=0,
                    data_dir=folder / kind,
                    name="bench",
                    log_url=f"{args.postgres}?schema={SCHEMA}",
                )
            backend = new_backend(config)
            print(f"{kind}: writing {rows:,} samples of one instrument", file=sys.stderr)
            fill_s = fill(backend, rows, instruments=1)
            remember_instrument(new_backend(config))
            figures: dict[str, Any] = {"fill_rows_per_s": round(rows / fill_s)}
            figures["history"] = asyncio.run(time_history(new_backend(config), start, END))
            print(f"{kind}: history {figures['history']}", file=sys.stderr)
            export_rows = min(args.export_rows, rows)
            figures["export"] = asyncio.run(time_export(config, start, export_rows, folder))
            print(f"{kind}: export {figures['export']}", file=sys.stderr)
            results[kind] = figures
            if kind != "sqlite":
                _drop_schema(args.postgres)
    print(json.dumps(results, indent=2))


def new_backend(config: HubConfig) -> LogBackend:
    """A backend on the config's log (PostgreSQL if it names a URL, else SQLite)."""
    if config.log_url:
        from kleinmaelzung.hub.store.postgres import PostgresBackend

        return PostgresBackend(config.log_url)
    return SqliteBackend(config.traffic_db)


def _drop_schema(url: str) -> None:
    import asyncpg

    async def drop() -> None:
        connection = await asyncpg.connect(url)
        await connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await connection.close()

    asyncio.run(drop())


if __name__ == "__main__":
    main()
