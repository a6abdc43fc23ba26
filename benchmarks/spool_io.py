"""What the agent's spool costs an SD card: bytes written per sample and fsyncs per second.

    python benchmarks/spool_io.py [--instruments 20] [--rate 10] [--seconds 20] [--json FILE]

Drives the real `Spool` (SQLite, WAL, synchronous=FULL) on this machine's disk
with `instruments x rate` samples per second, in three phases:

- connected: the hub acknowledges each sample about 0.3 s after it was taken
  (its ack interval is 0.25 s), as in steady operation; young samples wait
  for their ack rather than the disk (`SpoolLimits.hold_s`);
- hub away: nothing is acknowledged, so every sample is written;
- drain: after the outage, everything is acknowledged and deleted.

Bytes are the kernel's `write_bytes` for this process (what reaches the block
layer: the wear an SD card sees, before its own write amplification). fsyncs
are counted by strace (seccomp-filtered to fsync/fdatasync only, so it costs
nothing elsewhere), which the script runs itself under when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kleinmaelzung.agent import Spool, SpoolLimits
from kleinmaelzung.protocol import Sample

ACK_DELAY_S = 0.3


def write_bytes() -> int:
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


#: The next seq per instrument, across phases (seqs only grow within a run).
_next_seq: dict[str, int] = {}


async def phase(
    spool: Spool, name: str, seconds: float, instruments: int, rate: float, acked: bool
) -> dict[str, float]:
    """Take samples for `seconds`; acknowledge them ACK_DELAY_S later if `acked`."""
    loop = asyncio.get_running_loop()
    interval = 1 / rate
    started_bytes, started = write_bytes(), time.time()
    print(f"PHASE {name} {started:.6f}", file=sys.stderr, flush=True)
    taken = 0
    pending: list[tuple[float, dict[str, int]]] = []
    next_tick = loop.time()
    end = loop.time() + seconds
    while loop.time() < end:
        now = time.time()
        seqs: dict[str, int] = {}
        for index in range(instruments):
            instrument = f"t{index:02d}"
            seq = _next_seq.get(instrument, 0)
            _next_seq[instrument] = seq + 1
            spool.put(Sample(instrument=instrument, seq=seq, ts=now, values={"temperature": 21.5}))
            seqs[instrument] = seq
            taken += 1
        if acked:
            pending.append((now + ACK_DELAY_S, seqs))
            while pending and pending[0][0] <= now:
                spool.acknowledge(spool.run, pending.pop(0)[1])
        next_tick += interval
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
    await spool.commit()
    elapsed = time.time() - started
    written = write_bytes() - started_bytes
    return {
        "samples": taken,
        "seconds": round(elapsed, 2),
        "bytes_written": written,
        "bytes_per_sample": round(written / taken, 1) if taken else 0.0,
        "spool_rows": spool.committed_rows,
    }


async def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    folder = Path(tempfile.mkdtemp(prefix="kmz-spool-io-", dir=args.dir))
    try:
        spool = Spool(folder / "spool.sqlite", run="bench.0", limits=SpoolLimits())
        await spool.open()
        commits = asyncio.create_task(spool.run_commits())
        await spool.start_session("bench.1")  # connected, as the link does at a welcome
        connected = await phase(
            spool, "connected", args.seconds, args.instruments, args.rate, acked=True
        )
        spool.end_session()  # the hub went away
        away = await phase(spool, "hub_away", args.seconds, args.instruments, args.rate, False)
        results = {"connected": connected, "hub_away": away}
        # The hub is back: it acknowledges the whole backlog.
        started_bytes, started = write_bytes(), time.time()
        print(f"PHASE drain {started:.6f}", file=sys.stderr, flush=True)
        backlog = spool.committed_rows
        spool.acknowledge(spool.run, {f"t{i:02d}": 10**9 for i in range(args.instruments)})
        await spool.commit()
        results["drain"] = {
            "samples": backlog,
            "seconds": round(time.time() - started, 3),
            "bytes_written": write_bytes() - started_bytes,
            "spool_rows": spool.committed_rows,
        }
        print(f"PHASE end {time.time():.6f}", file=sys.stderr, flush=True)
        commits.cancel()
        await spool.close()
        return results
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fsyncs_by_phase(trace: Path, phases: list[tuple[str, float]]) -> dict[str, int]:
    """Count fsync/fdatasync lines of an `strace -ttt` file into the phases by time."""
    counts = {name: 0 for name, _ in phases[:-1]}
    for line in trace.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3 or "sync(" not in line:
            continue
        when = float(parts[1])
        for (name, start), (_, end) in itertools.pairwise(phases):
            if start <= when < end:
                counts[name] += 1
    return counts


def run_under_strace(argv: list[str]) -> int:
    """Run this script again under strace; merge the fsync counts into its output."""
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace"
        out = Path(tmp) / "out.json"
        result = subprocess.run(
            [
                "strace",
                "-f",
                "--seccomp-bpf",
                "-ttt",
                "-e",
                "trace=fsync,fdatasync",
                "-o",
                str(trace),
                sys.executable,
                __file__,
                "--no-strace",
                "--json",
                str(out),
                *argv,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        phases = [
            (parts[1], float(parts[2]))
            for parts in (line.split() for line in result.stderr.splitlines())
            if len(parts) == 3 and parts[0] == "PHASE"
        ]
        results = json.loads(out.read_text())
        for name, count in fsyncs_by_phase(trace, phases).items():
            seconds = results[name]["seconds"] or 1.0
            results[name]["fsyncs"] = count
            results[name]["fsyncs_per_s"] = round(count / seconds, 2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=20)
    parser.add_argument("--rate", type=float, default=10.0, help="samples/s per instrument")
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--dir", default=None, help="where the spool goes (default: $TMPDIR)")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--no-strace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.no_strace and shutil.which("strace") and os.environ.get("KMZ_NO_STRACE") != "1":
        forwarded = [a for a in sys.argv[1:] if a != "--no-strace"]
        sys.exit(run_under_strace(forwarded))
    figures = asyncio.run(main(args))
    if args.json:
        Path(args.json).write_text(json.dumps(figures))
    else:
        print(json.dumps(figures, indent=2))
