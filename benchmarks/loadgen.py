"""The load generator: P publishers, S subscribers, one process on uvloop + picows.

Run by `run.py` pinned to its own core; prints one JSON object with the
figures. Max-rate mode (`--rate 0`) is closed loop: each publisher keeps at
most `--window` samples that not every subscriber has received, so a server is
saturated without unbounded queues. Rate mode is open loop, the sends of all
publishers spread evenly over time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import contextlib

import picows
from protocols import PROTOCOLS, Protocol


class _Stats:
    """Shared state of all connections of one run."""

    def __init__(self, pubs: int, subs: int) -> None:
        self.pubs, self.subs = pubs, subs
        self.received = [[-1] * pubs for _ in range(subs)]  # highest seq per sub, pub
        self.counts = [0] * subs
        self.window_counts = [0] * subs
        self.latency_ns = array("q")
        self.gaps = self.out_of_order = 0
        self.window = (0, 0)  # ns
        self.progress = asyncio.Event()
        self.disconnects = 0


class _Connection(picows.WSListener):  # type: ignore[misc]
    def __init__(self, protocol: Protocol, stats: _Stats, sub_index: int) -> None:
        self.protocol = protocol
        self.stats = stats
        self.sub_index = sub_index
        self.transport: Any = None
        self.ready = asyncio.Event()
        self.message_type = picows.WSMsgType.TEXT if protocol.text else picows.WSMsgType.BINARY

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        for frame in self.protocol.hello():
            transport.send(self.message_type, frame)

    def on_ws_disconnected(self, transport: Any) -> None:
        self.stats.disconnects += 1

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type not in (
            picows.WSMsgType.TEXT,
            picows.WSMsgType.BINARY,
            picows.WSMsgType.CONTINUATION,
        ):
            return
        triples = self.protocol.feed(frame.get_payload_as_bytes())
        for reply in self.protocol.replies:
            transport.send(self.message_type, reply)
        self.protocol.replies.clear()
        if self.protocol.ready and not self.ready.is_set():
            self.ready.set()
        if not triples or self.sub_index < 0:
            return
        stats = self.stats
        now = time.time_ns()
        seen = stats.received[self.sub_index]
        in_window = stats.window[0] <= now < stats.window[1]
        for ts, seq, pub in triples:
            last = seen[pub]
            if seq == last + 1:
                seen[pub] = seq
            elif seq > last:
                stats.gaps += seq - last - 1
                seen[pub] = seq
            else:
                stats.out_of_order += 1
            if in_window:
                stats.latency_ns.append(now - ts)
        stats.counts[self.sub_index] += len(triples)
        if in_window:
            stats.window_counts[self.sub_index] += len(triples)
        stats.progress.set()


async def _connect(url: str, protocol: Protocol, stats: _Stats, sub_index: int) -> _Connection:
    headers = {"Sec-WebSocket-Protocol": protocol.subprotocol} if protocol.subprotocol else None
    _, connection = await picows.ws_connect(
        lambda: _Connection(protocol, stats, sub_index),
        url + protocol.path,
        extra_headers=headers,
        websocket_handshake_timeout=30,
    )
    await asyncio.wait_for(connection.ready.wait(), 30)
    return connection


async def _publish_max(
    pubs: list[_Connection], stats: _Stats, window: int, batch: int, stop: float
) -> list[int]:
    sent = [0] * len(pubs)
    while time.monotonic() < stop:
        stats.progress.clear()
        busy = False
        for index, connection in enumerate(pubs):
            acked = min(row[index] for row in stats.received) + 1 if stats.subs else sent[index]
            while sent[index] - acked < window:
                connection.transport.send(
                    connection.message_type, connection.protocol.publish(sent[index])
                )
                sent[index] += batch
                busy = True
        if not busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stats.progress.wait(), 0.5)
        else:
            await asyncio.sleep(0)
    return sent


async def _publish_rate(pubs: list[_Connection], rate: float, batch: int, stop: float) -> list[int]:
    sent = [0] * len(pubs)
    start = time.monotonic()
    period = 1.0 / rate
    # Spread the publishers' phases evenly so that the load is smooth.
    offsets = [i * period / len(pubs) for i in range(len(pubs))]
    while (now := time.monotonic()) < stop:
        for index, connection in enumerate(pubs):
            due = int((now - start - offsets[index]) / period) + 1
            while sent[index] // batch < due:
                connection.transport.send(
                    connection.message_type, connection.protocol.publish(sent[index])
                )
                sent[index] += batch
        await asyncio.sleep(0.001)
    return sent


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """One scenario against one server; the figures as a dict."""
    protocol_class = PROTOCOLS[args.protocol]
    stats = _Stats(args.pubs, args.subs)
    subs = [
        await _connect(
            args.sub_url or args.url, protocol_class("sub", i, topic=args.topic), stats, i
        )
        for i in range(args.subs)
    ]
    pubs = [
        await _connect(args.url, protocol_class("pub", i, batch=args.batch), stats, -1)
        for i in range(args.pubs)
    ]
    if args.wait_listed:
        # Subscribers on another hub: their hub must list every publisher's
        # instrument (presence over the bus) before sending means anything.
        await asyncio.to_thread(_wait_listed, args.wait_listed, args.pubs)
    now_ns, now = time.time_ns(), time.monotonic()
    start_ns = now_ns + int(args.warmup * 1e9)
    stats.window = (start_ns, start_ns + int(args.duration * 1e9))
    stop = now + args.warmup + args.duration
    cpu_before: float | None = None
    own_before: float | None = None

    async def sample_cpu() -> None:
        nonlocal cpu_before, own_before
        await asyncio.sleep(args.warmup)
        cpu_before = _servers_cpu(args.server_pid)
        own_before = _servers_cpu(args.server_pid, children=False)

    sampler = asyncio.create_task(sample_cpu())
    window = max(1, args.window // args.pubs) * args.batch
    if args.rate > 0:
        sent = await _publish_rate(pubs, args.rate, args.batch, stop)
    else:
        sent = await _publish_max(pubs, stats, window, args.batch, stop)
    cpu_after = _servers_cpu(args.server_pid)
    own_after = _servers_cpu(args.server_pid, children=False)
    await sampler
    deadline = time.monotonic() + args.drain
    expected = sum(sent) * args.subs
    while sum(stats.counts) < expected and time.monotonic() < deadline:
        stats.progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stats.progress.wait(), 0.2)
    latencies = sorted(stats.latency_ns)
    result = {
        "deliveries_per_s": sum(stats.window_counts) / args.duration,
        "window_start": start_ns / 1e9,
        "published": sum(sent),
        "lost": max(0, expected - sum(stats.counts)),
        "gaps": stats.gaps,
        "out_of_order": stats.out_of_order,
        "disconnects": stats.disconnects,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": latencies[-1] / 1e6 if latencies else None,
        "server_cpu_pct": None
        if cpu_before is None or cpu_after is None
        else 100 * (cpu_after - cpu_before) / args.duration,
        # The server process alone, without its children (the hub's log writer).
        "server_own_cpu_pct": None
        if own_before is None or own_after is None
        else 100 * (own_after - own_before) / args.duration,
        "loadgen_cpu_pct": None,
    }
    for connection in subs + pubs:
        connection.transport.disconnect()
    return result


async def hold(args: argparse.Namespace) -> dict[str, Any]:
    """The connection scenario: many idle subscribers, then one publish reaches all."""
    protocol_class = PROTOCOLS[args.protocol]
    stats = _Stats(1, args.subs)
    publisher = await _connect(args.url, protocol_class("pub", 0), stats, -1)
    rss_before = _rss_kb(args.server_pid[0])
    subs = []
    for start in range(0, args.subs, 200):
        subs += await asyncio.gather(
            *(
                _connect(
                    args.url,
                    protocol_class("sub", i, topic="i0" if args.protocol == "hub" else "0"),
                    stats,
                    i,
                )
                for i in range(start, min(args.subs, start + 200))
            )
        )
    await asyncio.sleep(1.0)  # let the server settle its buffers before measuring memory
    rss_after = _rss_kb(args.server_pid[0])
    publisher.transport.send(publisher.message_type, publisher.protocol.publish(0))
    deadline = time.monotonic() + 10
    while sum(stats.counts) < args.subs and time.monotonic() < deadline:
        stats.progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stats.progress.wait(), 0.5)
    for connection in [*subs, publisher]:
        connection.transport.disconnect()
    return {
        "connections": args.subs,
        "kb_per_conn": (rss_after - rss_before) / args.subs,
        "rss_mb": rss_after / 1024,
        "lost": args.subs - sum(stats.counts),
    }


def _servers_cpu(pids: list[int], children: bool = True) -> float | None:
    """CPU seconds of every server process (two hubs and NATS, say), summed."""
    each = [_cpu_seconds(pid, children) for pid in pids]
    return None if any(c is None for c in each) else sum(c for c in each if c is not None)


def _wait_listed(http: str, count: int, timeout: float = 20.0) -> None:
    """Return once the hub at `http` lists `count` online instruments."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(http + "/api/instruments", timeout=5) as response:
            listed = json.loads(response.read())
        if sum(r.get("state") == "online" for r in listed) >= count:
            return
        time.sleep(0.1)  # polling a hub's list: no event to wait for from outside
    raise RuntimeError(f"{http} did not list {count} instruments online in {timeout} s")


def _percentile(sorted_ns: Any, q: float) -> float | None:
    if not sorted_ns:
        return None
    return float(sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))]) / 1e6


def _cpu_seconds(pid: int, children: bool = True) -> float | None:
    """CPU seconds of the server and every process under it (the hub's log writer), ended or not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Its own time and its reaped children's: a writer process the hub
    # replaced during the window counts with all it used, its successor too.
    total = sum(int(f) for f in fields[11 : 15 if children else 13]) / os.sysconf("SC_CLK_TCK")
    for child in _children(pid) if children else ():
        total += _cpu_seconds(child) or 0.0
    return total


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return children
    for task in tasks:
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    """Parse arguments, run, print the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), required=True)
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT (no path)")
    parser.add_argument("--pubs", type=int, default=10)
    parser.add_argument("--subs", type=int, default=10)
    parser.add_argument("--rate", type=float, default=0, help="frames/s per publisher; 0 = max")
    parser.add_argument("--batch", type=int, default=1, help="samples per frame (hub only)")
    parser.add_argument("--window", type=int, default=1000, help="samples in flight, all pubs")
    parser.add_argument("--topic", default="*")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=2.0)
    parser.add_argument(
        "--server-pid", type=int, action="append", required=True, help="repeat for several"
    )
    parser.add_argument("--sub-url", help="subscribers' server, if not --url's (another hub)")
    parser.add_argument(
        "--wait-listed",
        help="before sending, wait until this hub (http://) lists every publisher's instrument",
    )
    parser.add_argument("--hold", action="store_true", help="the idle-connections scenario")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    started = time.process_time()
    result = uvloop.run(hold(args) if args.hold else run(args))
    if not args.hold:
        result["loadgen_cpu_pct"] = (
            100 * (time.process_time() - started) / (args.warmup + args.duration + args.drain)
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
