"""Retention: how long a pass takes, and how long the hub's writer waits meanwhile.

    python benchmarks/retention.py [--rows 1000000] [--backends sqlite,postgresql]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]

Writes `--rows` samples of one instrument, one every 10 s from 1 January
2026 (about 4 months), in frames of 100 as the hub logs them; then prunes
with samples kept 60 days and wire copies 30, as of 1 May, while a second
connection commits one small batch (a data frame of one sample) every
20 ms, as a hub's writer would. Reports the pass's time, rows removed,
and that writer's commit latency during the pass (median, p99, max)
against the same writer with no pass running.

Not a test: figures vary with the machine. The PostgreSQL log goes to a
schema of its own (kmz_bench_retention), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from kleinmaelzung.hub.store import LogBackend, Record, SqliteBackend
from kleinmaelzung.hub.store.batch import Batch, Item
from kleinmaelzung.hub.store.retention import RetentionPolicy, pruner_for

JANUARY = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
MAY = datetime(2026, 5, 1, tzinfo=UTC).timestamp()
STEP_S = 10.0
SCHEMA = "kmz_bench_retention"


def fill(backend: LogBackend, rows: int) -> None:
    """`rows` samples, one every STEP_S from JANUARY, in frames of 100, batches of 100 frames."""
    backend.open()
    encoder = msgspec.json.Encoder()
    try:
        items: list[Item] = []
        for first in range(0, rows, 100):
            seqs = range(first, min(first + 100, rows))
            frame = encoder.encode(
                {
                    "type": "data",
                    "samples": [
                        {
                            "instrument": "kiln-air",
                            "seq": s,
                            "ts": JANUARY + s * STEP_S,
                            "values": {"temperature": 20.0 + s % 7, "setpoint": 80.0},
                        }
                        for s in seqs
                    ],
                }
            )
            received = JANUARY + seqs[-1] * STEP_S + 0.5
            items.append(
                Record(received, "in", "pi-1", "data", frame, "kiln-air", None, None, "r1")
            )
            if len(items) >= 100:
                backend.write(Batch.of(items))
                items = []
        if items:
            backend.write(Batch.of(items))
    finally:
        backend.close()


def writer_latencies(backend: LogBackend, stop: threading.Event) -> list[float]:
    """Commit one small batch every 20 ms until `stop`; each commit's latency in ms."""
    backend.open()
    latencies = []
    seq = 10**9
    try:
        while not stop.is_set():
            frame = msgspec.json.encode(
                {
                    "type": "data",
                    "samples": [
                        {"instrument": "balance", "seq": seq, "ts": time.time(), "values": {"m": 1}}
                    ],
                }
            )
            record = Record(time.time(), "in", "pi-2", "data", frame, "balance", None, None, "w")
            started = time.perf_counter()
            backend.write(Batch.of([record]))
            latencies.append((time.perf_counter() - started) * 1000)
            seq += 1
            stop.wait(0.02)
    finally:
        backend.close()
    return latencies


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"median {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms"
        f" ({len(ordered)} commits)"
    )


async def measure(name: str, make: Callable[[], LogBackend], rows: int) -> None:
    started = time.perf_counter()
    await asyncio.to_thread(fill, make(), rows)
    print(f"{name}: wrote {rows:,} samples in {time.perf_counter() - started:.1f} s")

    stop = threading.Event()
    idle: list[float] = []
    thread = threading.Thread(target=lambda: idle.extend(writer_latencies(make(), stop)))
    thread.start()
    await asyncio.sleep(3)
    stop.set()
    thread.join()
    print(f"  writer, no pass running: {summary(idle)}")

    pruner = pruner_for(make())
    assert pruner is not None
    policy = RetentionPolicy(samples_days=60, wire_days=30)
    stop = threading.Event()
    during: list[float] = []
    thread = threading.Thread(target=lambda: during.extend(writer_latencies(make(), stop)))
    thread.start()
    await asyncio.sleep(0.5)
    started = time.perf_counter()
    report = await pruner.prune(policy, MAY)
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join()
    removed = sum(report.removed.values())
    print(
        f"  pass: {elapsed:.2f} s, removed {report.removed} ({removed / elapsed:,.0f} rows/s),"
        f" partitions {report.partitions}"
    )
    print(f"  writer during the pass: {summary(during)}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    backends = args.backends.split(",")
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "traffic.sqlite3"
            await measure("sqlite", lambda: SqliteBackend(path), args.rows)
    if "postgresql" in backends:
        import asyncpg

        from kleinmaelzung.hub.store.postgres import PostgresBackend

        url = f"{args.postgres}?schema={SCHEMA}"
        try:
            await measure("postgresql", lambda: PostgresBackend(url), args.rows)
        finally:
            connection = await asyncpg.connect(args.postgres)
            await connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            await connection.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
