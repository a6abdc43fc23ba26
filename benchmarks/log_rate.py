"""How fast the traffic-log writer commits, and what it costs the hub's process, per backend.

    python benchmarks/log_rate.py [--records 200000] [--samples-per-frame 1]
        [--backends sqlite,postgresql] [--postgres postgresql://postgres@127.0.0.1:5432/test]

Appends data records as the hub does (each one data frame with its sample
rows and an ack), as fast as the writer's backpressure allows, and reports
records/s and sample rows/s committed, and the hub process's CPU seconds per
10,000 records (the loop appending plus the writer thread; PostgreSQL's own
work is in the server's processes, not counted). The PostgreSQL log goes to
a schema of its own (kmz_bench_rate), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from kleinmaelzung.hub.store import LogBackend, LogWriter, Record, SqliteBackend
from kleinmaelzung.hub.store.process import ProcessWriter

SCHEMA = "kmz_bench_rate"


def records(count: int, per_frame: int) -> list[Record]:
    """S1-shaped data records: 10 instruments, frames of `per_frame` samples."""
    encoder = msgspec.json.Encoder()
    out = []
    start = time.time() - count
    for i in range(count):
        instrument = f"pub-{i % 10}"
        seq = (i // 10) * per_frame
        frame = encoder.encode(
            {
                "type": "data",
                "samples": [
                    {
                        "instrument": instrument,
                        "seq": seq + k,
                        "ts": start + i,
                        "values": {"value": float(i), "ok": True},
                    }
                    for k in range(per_frame)
                ],
            }
        )
        out.append(
            Record(
                start + i,
                "in",
                "agent-1",
                "data",
                frame,
                instrument,
                "client-1/a,client-2/b",
                ("agent-1/r1", {instrument: seq + per_frame - 1}),
                "r1",
            )
        )
    return out


async def measure(
    backend: LogBackend, batch: list[Record], url: str | None = None
) -> dict[str, float]:
    """Records/s and CPU per 10,000 records while the writer commits `batch`.

    With a `url`, the writer is a process of its own (`ProcessWriter`), as in
    `kmz hub`; its CPU is counted too (its children's, once it has exited).
    """
    store: LogWriter | ProcessWriter = (
        LogWriter(backend) if url is None else ProcessWriter(url, backend)
    )
    await store.open()
    committed = 0

    def on_committed(acks: dict[str, dict[str, int]]) -> None:
        nonlocal committed
        committed += 1

    store.set_on_committed(on_committed)
    cpu = _cpu_s()
    started = time.perf_counter()
    for i, record in enumerate(batch):
        if i % 1000 == 0:
            await store.wait_for_room()
        store.append(record)
    await store.flush()
    took = time.perf_counter() - started
    await store.close()
    cpu = _cpu_s() - cpu
    samples = len(msgspec.json.decode(batch[0].message)["samples"])
    return {
        "records_per_s": round(len(batch) / took),
        "sample_rows_per_s": round(len(batch) * samples / took),
        "cpu_s_per_10k_records": round(cpu / len(batch) * 10_000, 3),
        "commits": committed,
    }


def _cpu_s() -> float:
    """This process's CPU seconds and its ended children's (the writer process, once closed)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--samples-per-frame", type=int, default=1)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--writer", choices=("thread", "process"), default="process")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    batch = records(args.records, args.samples_per_frame)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for kind in args.backends.split(","):
            backend: LogBackend
            if kind == "sqlite":
                path = Path(scratch) / f"rate-{args.writer}.sqlite3"
                backend = SqliteBackend(path)
                url = "sqlite:///" + str(path).lstrip("/")
            else:
                from kleinmaelzung.hub.store.postgres import PostgresBackend

                _drop_schema(args.postgres)
                url = f"{args.postgres}?schema={SCHEMA}"
                backend = PostgresBackend(url)
            results[kind] = asyncio.run(
                measure(backend, batch, url if args.writer == "process" else None)
            )
            print(f"{kind}: {results[kind]}", file=sys.stderr)
            if kind != "sqlite":
                _drop_schema(args.postgres)
    print(json.dumps(results, indent=2))


def _drop_schema(url: str) -> None:
    import asyncpg

    async def drop() -> None:
        connection = await asyncpg.connect(url)
        await connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await connection.close()

    asyncio.run(drop())


if __name__ == "__main__":
    main()
