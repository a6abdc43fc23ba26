"""What delivering only committed samples would cost: the hub's append-to-commit latency.

    python benchmarks/commit_latency.py [--rate 2000] [--seconds 10]

Issue 9 asks how to deliver at most once to clients across hub crashes:
either deliver only what the log has committed, or deliver at once and let
clients drop repeats by (run, seq). The hub does the second (no delay of its
own). This measures what the first would add to every sample's latency: the
time from `Store.append` to the commit callback, at the S2 scenario's sample
rate (200 publishers x 10 Hz), on the SQLite log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import msgspec

from kleinmaelzung.hub.store import Record, SqliteStore


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main(rate: float, seconds: float) -> dict[str, float]:
    appended: dict[int, float] = {}
    delays: list[float] = []
    seen = -1

    def committed(acks: dict[str, dict[str, int]]) -> None:
        nonlocal seen
        now = time.perf_counter()
        newest = acks["bench/r"]["i"]
        for seq in range(seen + 1, newest + 1):
            delays.append(now - appended.pop(seq))
        seen = newest

    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder) / "traffic.sqlite3", on_committed=committed)
        await store.open()
        loop = asyncio.get_running_loop()
        interval = 1 / rate
        next_at = loop.time()
        end = loop.time() + seconds
        seq = 0
        while loop.time() < end:
            frame = msgspec.json.encode(
                {
                    "type": "data",
                    "samples": [
                        {"instrument": "i", "seq": seq, "ts": time.time(), "values": {"v": 1.5}}
                    ],
                    "run": "r",
                }
            )
            appended[seq] = time.perf_counter()
            store.append(
                Record(
                    time.time(),
                    "in",
                    "bench",
                    "data",
                    frame,
                    "i",
                    None,
                    ("bench/r", {"i": seq}),
                    "r",
                )
            )
            seq += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        await store.flush()
        await store.close()
    return {
        "samples": len(delays),
        "p50_ms": round(1000 * percentile(delays, 0.5), 2),
        "p99_ms": round(1000 * percentile(delays, 0.99), 2),
        "max_ms": round(1000 * max(delays), 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="samples per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rate, args.seconds))))
