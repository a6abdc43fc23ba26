"""Fuzz a running hub process with hostile frames on both endpoints, before and after auth.

Each frame sent before auth goes as the first frame of a connection of its
own; the hub must answer it with an error and close with a code, or close
with a code. After auth, frames go in batches on welcomed connections, each
batch followed by a marker (a `list_instruments` for a client, a sample of
`fz-marker` for the agent) whose answer proves the batch was read: every
frame the protocol's own state machine refuses must have drawn an `error`
by then, unless the hub closed the connection with a code.

As a script (the full run; figures as JSON on stdout):
    .venv/bin/python -m tests.e2e.fuzz_run --frames 100000 --seed 11
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from kleinmaelzung.protocol import (
    Limits,
    Refused,
    hub_agent_connection,
    hub_client_connection,
)

from .hostile import AuthedHub, agent_hello, client_hello, hostile_frames

#: What the fuzzed hub is configured with: the rate limit is not under test here.
FUZZ_CONFIG = "[limits]\nclient_messages_per_s = 1000000.0\nclient_burst_messages = 1000000\n"
FUZZ_LIMITS = Limits(client_messages_per_s=1e6, client_burst_messages=1_000_000)
BATCH = 100
#: Share of frames sent before auth, each on a connection of its own.
PRE_AUTH_SHARE = 0.1
DEADLINE_S = 10.0


@dataclass
class FuzzReport:
    """What was sent and how the hub answered."""

    pre_auth: int = 0
    post_auth: int = 0
    #: `error` frames received, and how many the protocol's state machine said were due.
    errors: int = 0
    errors_due: int = 0
    #: Errors due in batches whose connection the hub closed (1007) before answering them all.
    closed_with_errors_due: int = 0
    #: Pre-auth frames answered by an error and a close code, or a close code alone.
    pre_auth_answered: int = 0
    pre_auth_closed: int = 0
    close_codes: Counter[int] = field(default_factory=Counter)
    error_codes: Counter[str] = field(default_factory=Counter)
    #: Frames neither answered nor followed by a close with a code (must stay empty).
    unexplained: list[str] = field(default_factory=list)
    connections: int = 0
    recent_errors: list[str] = field(default_factory=list)
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "frames": self.pre_auth + self.post_auth,
            "pre_auth": self.pre_auth,
            "post_auth": self.post_auth,
            "errors": self.errors,
            "errors_due": self.errors_due,
            "errors_due_on_closed_connections": self.closed_with_errors_due,
            "pre_auth_answered": self.pre_auth_answered,
            "pre_auth_closed_only": self.pre_auth_closed,
            "close_codes": dict(self.close_codes),
            "error_codes": dict(self.error_codes.most_common()),
            "unexplained": len(self.unexplained),
            "connections": self.connections,
            "rss_before_mb": round(self.rss_before / 2**20, 1),
            "rss_peak_mb": round(self.rss_peak / 2**20, 1),
            "rss_after_mb": round(self.rss_after / 2**20, 1),
            "seconds": round(self.seconds, 1),
        }


def _ws_url(url: str, endpoint: str) -> str:
    return url.replace("http", "ws", 1) + f"/ws/{endpoint}"


async def _send(ws: aiohttp.ClientWebSocketResponse, frame: str | bytes, binary: bool) -> None:
    data = frame.encode() if isinstance(frame, str) else frame
    await ws.send_frame(data, aiohttp.WSMsgType.BINARY if binary else aiohttp.WSMsgType.TEXT)


def _closes(frame: str | bytes, binary: bool) -> bool:
    """Whether the hub must close on `frame`: a text frame that is not UTF-8 (RFC 6455: 1007)."""
    if binary or isinstance(frame, str):
        return False
    try:
        frame.decode()
    except UnicodeDecodeError:
        return True
    return False


def _note_error(report: FuzzReport, data: str | bytes) -> bool:
    try:
        message = json.loads(data)
    except ValueError:
        return False
    if isinstance(message, dict) and message.get("type") == "error":
        report.recent_errors = [*report.recent_errors[-4:], str(message)[:300]]
        report.errors += 1
        report.error_codes[str(message.get("code"))] += 1
        return True
    return False


async def _pre_auth(
    session: aiohttp.ClientSession,
    url: str,
    endpoint: str,
    frame: str | bytes,
    binary: bool,
    report: FuzzReport,
) -> None:
    report.pre_auth += 1
    report.connections += 1
    answered = False
    async with asyncio.timeout(DEADLINE_S):
        ws = await session.ws_connect(_ws_url(url, endpoint), autoclose=False, max_msg_size=0)
        try:
            await _send(ws, frame, binary)
            while True:
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    answered = _note_error(report, msg.data) or answered
                    if '"welcome"' in msg.data:
                        report.unexplained.append(f"welcomed without a token: {frame[:200]!r}")
                elif msg.type is aiohttp.WSMsgType.CLOSE:
                    report.close_codes[int(msg.data)] += 1
                    await ws.close()
                    break
                else:  # closed without a close frame
                    report.close_codes[ws.close_code or 1006] += 1
                    if not answered:
                        report.unexplained.append(f"pre-auth, no close frame: {frame[:200]!r}")
                    return
        finally:
            await ws.close()
    if answered:
        report.pre_auth_answered += 1
    else:
        report.pre_auth_closed += 1


async def _pre_auth_worker(
    url: str, frames: list[tuple[str, str | bytes, bool]], report: FuzzReport
) -> None:
    async with aiohttp.ClientSession() as session:
        for endpoint, frame, binary in frames:
            await _pre_auth(session, url, endpoint, frame, binary, report)


async def _until_marker(
    ws: aiohttp.ClientWebSocketResponse, report: FuzzReport, marker_seq: int
) -> bool:
    """Read until the marker's answer (False) or the connection's end (True), counting errors."""
    while True:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            if _note_error(report, msg.data):
                continue
            answer = json.loads(msg.data)
            if answer.get("id") == f"marker-{marker_seq}" or (
                answer.get("type") == "ack"
                and answer.get("seqs", {}).get("fz-marker", -1) >= marker_seq
            ):
                return False
        elif msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.ERROR,
        ):
            report.close_codes[ws.close_code or 1006] += 1
            return True


async def _post_auth_worker(
    hub: AuthedHub,
    endpoint: str,
    frames: list[tuple[str | bytes, bool]],
    report: FuzzReport,
) -> None:
    hello = agent_hello(hub.agent_token) if endpoint == "agent" else client_hello(hub.client_token)
    marker_seq = 0  # the agent's markers: seqs of fz-marker, from 1
    async with aiohttp.ClientSession() as session:
        position = 0
        while position < len(frames):
            report.connections += 1
            ws = await session.ws_connect(_ws_url(hub.url, endpoint), max_msg_size=0)
            oracle = (hub_agent_connection if endpoint == "agent" else hub_client_connection)(
                FUZZ_LIMITS
            )
            await ws.send_str(json.dumps(hello))
            oracle.receive(json.dumps(hello))
            welcome = await ws.receive_json(timeout=DEADLINE_S)
            assert welcome["type"] == "welcome", welcome
            closed = False
            while position < len(frames) and not closed:
                batch = frames[position : position + BATCH]
                due = 0
                sent = 0
                closing = False
                for frame, binary in batch:
                    try:
                        await _send(ws, frame, binary)
                    except (ConnectionError, aiohttp.ClientError):
                        break  # the hub closed after an earlier frame: the reader says how
                    sent += 1
                    if _closes(frame, binary):
                        # Anything sent after it would meet a reset and lose the close frame.
                        closing = True
                        break
                    result = oracle.receive(frame, now=None)
                    if isinstance(result, Refused) and not result.silent:
                        due += 1
                position += sent
                report.post_auth += sent
                marker_seq += 1
                if endpoint == "agent":
                    marker: dict[str, Any] = {
                        "type": "data",
                        "run": "fuzzrun",
                        "samples": [
                            {
                                "instrument": "fz-marker",
                                "seq": marker_seq,
                                "ts": 1.7e9,
                                "values": {},
                            }
                        ],
                    }
                else:
                    marker = {"type": "list_instruments", "id": f"marker-{marker_seq}"}
                if not closing:
                    with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                        await ws.send_str(json.dumps(marker))
                errors_before = report.errors
                batch_kinds = [(len(f), f[:80]) for f, _ in frames[position - sent : position]]
                try:
                    async with asyncio.timeout(DEADLINE_S * 3):
                        closed = await _until_marker(ws, report, marker_seq)
                except TimeoutError:
                    report.unexplained.append(
                        f"{endpoint}: no answer to the marker in {DEADLINE_S * 3:g} s "
                        f"(errors: {report.recent_errors}) after {batch_kinds}"
                    )
                    closed = True
                if closed and ws.close_code in (None, 1006):
                    report.unexplained.append(
                        f"{endpoint}: closed without a code after {batch_kinds}"
                    )
                got = report.errors - errors_before
                if closed:  # with a code: what it had not answered yet went with it
                    report.closed_with_errors_due += due
                else:
                    report.errors_due += due
                if not closed and got < due:
                    report.unexplained.append(
                        f"{endpoint}: {due} errors due in a batch, {got} received"
                    )
            await ws.close()


def _split(
    count: int, seed: int
) -> tuple[list[tuple[str, str | bytes, bool]], dict[str, list[tuple[str | bytes, bool]]]]:
    rng = random.Random(seed)
    streams = {e: hostile_frames(random.Random(f"{seed}-{e}"), e) for e in ("agent", "client")}
    pre: list[tuple[str, str | bytes, bool]] = []
    post: dict[str, list[tuple[str | bytes, bool]]] = {"agent": [], "client": []}
    for _ in range(count):
        endpoint = rng.choice(("agent", "client"))
        frame = next(streams[endpoint])
        binary = isinstance(frame, bytes) and rng.random() < 0.5
        if rng.random() < PRE_AUTH_SHARE:
            pre.append((endpoint, frame, binary))
        else:
            post[endpoint].append((frame, binary))
    return pre, post


async def fuzz_hub(hub: AuthedHub, count: int, seed: int, workers: int = 4) -> FuzzReport:
    """Send `count` hostile frames to `hub`, about half to each endpoint; see the module doc."""
    report = FuzzReport(rss_before=hub.rss())
    report.rss_peak = report.rss_before
    pre, post = _split(count, seed)
    started = time.monotonic()

    async def watch_memory() -> None:
        while True:
            report.rss_peak = max(report.rss_peak, hub.rss())
            await asyncio.sleep(0.2)  # a sampling interval, not a synchronisation

    watcher = asyncio.create_task(watch_memory())
    try:
        clients = post["client"]
        share = -(-len(clients) // workers) or 1
        await asyncio.gather(
            *(_pre_auth_worker(hub.url, pre[i::workers], report) for i in range(workers)),
            _post_auth_worker(hub, "agent", post["agent"], report),
            *(
                _post_auth_worker(hub, "client", clients[i : i + share], report)
                for i in range(0, len(clients), share)
            ),
        )
    finally:
        watcher.cancel()
    report.seconds = time.monotonic() - started
    report.rss_after = hub.rss()
    report.rss_peak = max(report.rss_peak, report.rss_after)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hub = AuthedHub.start(Path(tmp), FUZZ_CONFIG)
        try:
            report = asyncio.run(fuzz_hub(hub, args.frames, args.seed))
            output = hub.process.output()
        finally:
            hub.stop()
        figures = report.figures()
        figures["tracebacks_in_hub_log"] = output.count("Traceback")
        figures["hub_log_lines"] = output.count("\n")
        figures["unexplained_examples"] = report.unexplained[:5]
        print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
