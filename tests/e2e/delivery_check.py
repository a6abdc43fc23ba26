"""Give every sample one verdict from the hub's traffic log and the agent's own record.

The sources are the real files, read after the process that writes them has
stopped (a copy of the SQLite file and its WAL is opened, never the original):

- the hub's traffic log: every inbound `data` row holds the agent's frame as it
  crossed the wire, with its `run`; the hub's outbound `gap` rows name the
  dropped seqs the log does not hold (the agents' inbound ones may name more);
- the agent's spool: what it still keeps, unacknowledged, after it stopped;
- what a client received (`RawWatcher` records frames as the hub sent them,
  with their run, before any client-side filtering).

A run on the wire (`abc.3`) is one connection of one agent process; the part
before the '.' is the agent process's run, within which each instrument's seqs
count up from 0 across its connections. So the samples an agent process
produced are, per instrument, 0 up to the highest seq any source shows. Each
gets one verdict:

ok            logged exactly once, in order
lost          in no source: not in the log, not in the spool, not named by a gap
duplicated    logged more than once
out_of_order  logged once, but after a higher seq of the same run and instrument
dropped       named by a gap (the spool's limits dropped it) and not logged
pending       still in the agent's spool when it stopped (not lost: sent later)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import sqlite3
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from kleinmaelzung.protocol import PROTOCOL_VERSION

#: (agent process run, instrument, seq): one sample, whatever connection carried it.
Key = tuple[str, str, int]

VERDICTS = ("ok", "lost", "duplicated", "out_of_order", "dropped", "pending")


def process_run(run: str) -> str:
    """The agent process's run of a wire run: `abc.3` -> `abc`."""
    return run.split(".", 1)[0]


# --- reading the files ---------------------------------------------------------------


@contextlib.contextmanager
def snapshot(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to a copy of a SQLite file and its WAL: the original is never touched.

    Opening the copy replays its WAL, as the next process to open the
    original would: what a killed writer committed is there, nothing else.
    """
    with tempfile.TemporaryDirectory(prefix="kmz-snapshot-") as folder:
        copy = Path(folder) / path.name
        shutil.copyfile(path, copy)
        wal = path.with_name(path.name + "-wal")
        if wal.exists():
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        connection = sqlite3.connect(copy)
        try:
            yield connection
        finally:
            connection.close()


@dataclass(frozen=True)
class LoggedFrame:
    """One inbound `data` row of the traffic log."""

    row: int
    run: str
    backlog: bool
    #: (instrument, seq, ts) in frame order.
    samples: tuple[tuple[str, int, float], ...]
    #: Which connection of its agent process it came on: 1 for the first
    #: welcome (whose live run is `abc.1`), 0 if the log holds no hello.
    connection: int = 0


@dataclass(frozen=True)
class LoggedGap:
    """One `gap` (from the agent, or as sent to a client)."""

    instrument: str
    run: str
    first_seq: int
    last_seq: int
    count: int
    reason: str = ""

    def named(self) -> Iterator[Key]:
        """Every seq the gap's range covers."""
        agent_run = process_run(self.run)
        for seq in range(self.first_seq, self.last_seq + 1):
            yield (agent_run, self.instrument, seq)


@dataclass
class HubLog:
    """What the hub's traffic log holds of samples and gaps, in log order."""

    frames: list[LoggedFrame] = field(default_factory=list)
    #: The hub's statements of what is missing (its outbound `gap` rows): the
    #: agents' gaps less what the log holds.
    gaps: list[LoggedGap] = field(default_factory=list)
    #: The agents' own `gap` messages, as they came (they may name samples
    #: the hub logged without the agent hearing so).
    claimed_gaps: list[LoggedGap] = field(default_factory=list)
    #: Row ids of the `agent_hello`s: each starts a connection.
    hello_rows: list[int] = field(default_factory=list)

    @property
    def samples(self) -> int:
        """Samples in all inbound data rows (repeats included)."""
        return sum(len(f.samples) for f in self.frames)

    def keys(self) -> Counter[Key]:
        """How often each sample is logged."""
        return Counter(
            (process_run(f.run), instrument, seq)
            for f in self.frames
            for instrument, seq, _ in f.samples
        )


#: The rows the checker reads, in log order, on either backend.
LOG_ROWS = (
    "SELECT id, direction, peer, type, message FROM traffic"
    " WHERE (direction = 'in' AND type IN ('agent_hello', 'data', 'gap'))"
    " OR (direction = 'out' AND type = 'gap') ORDER BY id"
)


def read_hub_log(path: Path) -> HubLog:
    """Read a hub's traffic log file (`DATA/traffic.sqlite3`) after the hub stopped."""
    with snapshot(path) as db:
        return hub_log_of(db.execute(LOG_ROWS))


def hub_log_of(rows: Iterable[tuple[int, str, str, str, str]]) -> HubLog:
    """A `HubLog` of traffic rows (`LOG_ROWS`): from SQLite, or PostgreSQL shared by hubs."""
    log = HubLog()
    hello_runs: dict[str, str] = {}
    connections: Counter[str] = Counter()  # hellos per agent process run
    for row_id, direction, peer, kind, text in rows:
        message = msgspec.json.decode(text)
        if kind == "gap" and direction == "in":
            log.claimed_gaps.append(_gap(message))
        elif kind == "agent_hello":
            hello_runs[peer] = message["run"]
            connections[message["run"]] += 1
            log.hello_rows.append(row_id)
        elif kind == "gap":
            log.gaps.append(_gap(message))
        else:
            # An agent may leave `run` out: then it is its hello's.
            run = message.get("run") or hello_runs[peer]
            samples = tuple((s["instrument"], s["seq"], s["ts"]) for s in message["samples"])
            connection = connections[hello_runs.get(peer, "")]
            backlog = bool(message.get("backlog"))
            log.frames.append(LoggedFrame(row_id, run, backlog, samples, connection))
    return log


def _gap(message: dict[str, Any]) -> LoggedGap:
    return LoggedGap(
        instrument=message["instrument"],
        run=message["run"],
        first_seq=message["first_seq"],
        last_seq=message["last_seq"],
        count=message["count"],
        reason=message.get("reason", ""),
    )


@dataclass
class SpoolContents:
    """What an agent's spool file holds after the agent stopped."""

    samples: dict[Key, float] = field(default_factory=dict)  # key -> ts
    #: Rows per wire run, as stored.
    runs: Counter[str] = field(default_factory=Counter)
    gaps: list[LoggedGap] = field(default_factory=list)

    @property
    def newest_ts(self) -> float | None:
        """The agent time of the newest sample it holds."""
        return max(self.samples.values(), default=None)


def read_spool(path: Path) -> SpoolContents:
    """Read an agent's spool file after the agent stopped (or was killed)."""
    contents = SpoolContents()
    if not path.exists():
        return contents
    with snapshot(path) as db:
        for run, instrument, seq, ts in db.execute(
            "SELECT run, instrument, seq, ts FROM samples ORDER BY id"
        ):
            contents.samples[(process_run(run), instrument, seq)] = ts
            contents.runs[run] += 1
        for instrument, run, first, last, count, reason in db.execute(
            "SELECT instrument, run, first_seq, last_seq, count, reason FROM gaps ORDER BY id"
        ):
            contents.gaps.append(LoggedGap(instrument, run, first, last, count, reason))
    return contents


def spool_depth(path: Path) -> dict[str, int]:
    """Rows per wire run in a spool a running agent holds (a read-only query, no copy).

    SQLite in WAL mode lets a reader in another process see the last commit
    without blocking the writer; used only to wait for a backlog to drain.
    """
    if not path.exists():
        return {}
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        ) as db:
            return dict(db.execute("SELECT run, count(*) FROM samples GROUP BY run").fetchall())
    except sqlite3.OperationalError:
        return {}


# --- verdicts --------------------------------------------------------------------------


@dataclass
class Verdicts:
    """One verdict per sample produced, and the evidence for the bad ones."""

    by_key: dict[Key, str] = field(default_factory=dict)
    #: Gaps whose count is not the number of unlogged seqs in their range.
    wrong_gaps: list[tuple[LoggedGap, int]] = field(default_factory=list)
    #: Samples both named by a gap and logged.
    gapped_but_logged: list[Key] = field(default_factory=list)

    def count(self, verdict: str) -> int:
        """How many samples got this verdict."""
        return sum(1 for v in self.by_key.values() if v == verdict)

    def keys(self, verdict: str) -> list[Key]:
        """The samples with this verdict, sorted."""
        return sorted(k for k, v in self.by_key.items() if v == verdict)

    @property
    def produced(self) -> int:
        """Samples the agent processes produced, as far as any source shows."""
        return len(self.by_key)

    def figures(self) -> dict[str, int]:
        """Counts per verdict, for the report."""
        return {"produced": self.produced, **{v: self.count(v) for v in VERDICTS}}

    def explain(self, limit: int = 10) -> str:
        """The figures and the first few bad samples of each kind, for an assertion message."""
        lines = [", ".join(f"{k}={v}" for k, v in self.figures().items())]
        for verdict in VERDICTS[1:]:
            keys = self.keys(verdict)
            if keys:
                lines.append(f"{verdict}: {ranges(keys)[:limit]}")
        if self.wrong_gaps:
            lines.append(f"wrong gap counts: {self.wrong_gaps[:limit]}")
        if self.gapped_but_logged:
            lines.append(f"named by a gap and logged: {self.gapped_but_logged[:limit]}")
        return "\n".join(lines)


def check_delivery(
    log: HubLog,
    *,
    spool: SpoolContents | None = None,
    spooled: Iterable[Key] = (),
    gaps: Iterable[LoggedGap] = (),
) -> Verdicts:
    """One verdict per sample produced.

    `spool` is the agent's spool when it last stopped (its samples are
    pending, and its gaps count); `spooled` are samples that reached the spool
    at some point (seen in earlier snapshots): they count as produced, so one
    missing from the log is lost. `gaps` adds gaps known from elsewhere.
    """
    verdicts = Verdicts()
    logged = log.keys()
    out_of_order: set[Key] = set()
    newest: dict[tuple[str, str], int] = {}
    seen: set[Key] = set()
    for frame in log.frames:
        agent_run = process_run(frame.run)
        for instrument, seq, _ in frame.samples:
            key = (agent_run, instrument, seq)
            stream = (frame.run, instrument)
            if key not in seen and seq <= newest.get(stream, -1):
                out_of_order.add(key)
            seen.add(key)
            newest[stream] = max(seq, newest.get(stream, -1))
    all_gaps = [*log.gaps, *(spool.gaps if spool else []), *gaps]
    gapped: set[Key] = set()
    for gap in _unique(all_gaps):
        keys = list(gap.named())
        unlogged = sum(1 for k in keys if k not in logged)
        if unlogged != gap.count:
            verdicts.wrong_gaps.append((gap, unlogged))
        gapped.update(keys)
    pending = set(spool.samples) if spool else set()
    highest: dict[tuple[str, str], int] = {}
    for agent_run, instrument, seq in [*logged, *gapped, *pending, *spooled]:
        stream = (agent_run, instrument)
        highest[stream] = max(seq, highest.get(stream, -1))
    for (agent_run, instrument), top in highest.items():
        for seq in range(top + 1):
            key = (agent_run, instrument, seq)
            times = logged.get(key, 0)
            if times > 1:
                verdict = "duplicated"
            elif times == 1:
                verdict = "out_of_order" if key in out_of_order else "ok"
                if key in gapped:
                    verdicts.gapped_but_logged.append(key)
            elif key in gapped:
                verdict = "dropped"
            elif key in pending:
                verdict = "pending"
            else:
                verdict = "lost"
            verdicts.by_key[key] = verdict
    return verdicts


def _unique(gaps: Iterable[LoggedGap]) -> list[LoggedGap]:
    """Each gap once: the log and the spool may both hold it (logged, not yet acknowledged)."""
    return list(dict.fromkeys(gaps))


def ranges(keys: Iterable[Key]) -> list[str]:
    """Keys as compact ranges: `run/instrument:3..7`."""
    by_stream: dict[tuple[str, str], list[int]] = defaultdict(list)
    for agent_run, instrument, seq in keys:
        by_stream[(agent_run, instrument)].append(seq)
    shown = []
    for (agent_run, instrument), seqs in sorted(by_stream.items()):
        seqs.sort()
        start = previous = seqs[0]
        for seq in [*seqs[1:], None]:
            if seq is not None and seq == previous + 1:
                previous = seq
                continue
            span = f"{start}" if start == previous else f"{start}..{previous}"
            shown.append(f"{agent_run}/{instrument}:{span}")
            if seq is not None:
                start = previous = seq
    return shown


# --- what a client received -----------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One sample as a client received it."""

    run: str
    instrument: str
    seq: int
    ts: float
    received: float  # the client's time.time() when its frame was read

    @property
    def key(self) -> Key:
        """The sample's identity."""
        return (process_run(self.run), self.instrument, self.seq)

    @property
    def latency_s(self) -> float:
        """From the agent's reading to the client (one machine: one clock)."""
        return self.received - self.ts


@dataclass
class ClientVerdicts:
    """What a live client saw: each sample at most once, in order, and each in the log."""

    delivered: int = 0
    duplicated: list[Key] = field(default_factory=list)
    out_of_order: list[Key] = field(default_factory=list)
    #: Delivered live, but not in the log (or logged with another time).
    not_logged: list[Key] = field(default_factory=list)

    def figures(self) -> dict[str, int]:
        """Counts, for the report."""
        return {
            "delivered": self.delivered,
            "duplicated": len(self.duplicated),
            "out_of_order": len(self.out_of_order),
            "not_logged": len(self.not_logged),
        }


def check_client(received: Iterable[Received], log: HubLog | None = None) -> ClientVerdicts:
    """Check a client's samples: none twice, seqs growing per agent run and instrument.

    Live samples of a new connection's run have higher seqs than every
    earlier one of the same agent process, so the order holds across
    connections. With `log`, every delivered sample must be logged too, with
    the same agent time.
    """
    verdicts = ClientVerdicts()
    logged_ts = (
        {
            (process_run(f.run), instrument, seq): ts
            for f in log.frames
            for instrument, seq, ts in f.samples
        }
        if log is not None
        else None
    )
    seen: set[Key] = set()
    newest: dict[tuple[str, str], int] = {}
    for sample in received:
        key = sample.key
        verdicts.delivered += 1
        stream = key[:2]
        if key in seen:
            verdicts.duplicated.append(key)
        elif sample.seq <= newest.get(stream, -1):
            verdicts.out_of_order.append(key)
        seen.add(key)
        newest[stream] = max(sample.seq, newest.get(stream, -1))
        if logged_ts is not None and logged_ts.get(key) != sample.ts:
            verdicts.not_logged.append(key)
    return verdicts


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile (nearest rank) of `values`; nan if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


class RawWatcher:
    """A client that records every frame the hub sends, as sent: no filtering, no dedup.

    It speaks the protocol with plain aiohttp, so that what it records is what
    crossed the wire (the Python client drops repeats by run and seq, which
    would hide a hub that sends one). It reconnects every 0.1 s while the hub
    is away; what the hub sent meanwhile is missed, which is allowed.
    """

    def __init__(self, url: str, patterns: tuple[str, ...] = ("*",), name: str = "raw-watch"):
        self.url = url.rstrip("/") + "/ws/client"
        self.patterns = patterns
        self.name = name
        self.received: list[Received] = []
        self.gaps: list[LoggedGap] = []
        #: Subscriptions confirmed by a hub (one per connection).
        self.subscribed = 0
        self.subscribed_event = asyncio.Event()

    async def run(self) -> None:
        """Watch until cancelled."""
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError, ConnectionError):
                    await self._watch(session)
                await asyncio.sleep(0.1)  # reconnect interval while the hub is down

    async def _watch(self, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(self.url, heartbeat=10.0, max_msg_size=1 << 25) as ws:
            await ws.send_str(
                msgspec.json.encode(
                    {"type": "client_hello", "protocol": PROTOCOL_VERSION, "name": self.name}
                ).decode()
            )
            await ws.send_str(
                msgspec.json.encode(
                    {"type": "subscribe", "id": "s", "patterns": list(self.patterns)}
                ).decode()
            )
            async for message in ws:
                if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break
                now = time.time()
                self._take(msgspec.json.decode(message.data), now)

    def _take(self, message: dict[str, Any], now: float) -> None:
        kind = message.get("type")
        if kind == "data":
            run = message.get("run") or ""
            self.received += [
                Received(run, s["instrument"], s["seq"], s["ts"], now) for s in message["samples"]
            ]
        elif kind == "gap":
            self.gaps.append(_gap(message))
        elif kind == "subscribed":
            self.subscribed += 1
            self.subscribed_event.set()


def spool_gaps(path: Path) -> list[LoggedGap]:
    """The gaps a running agent's spool holds (not yet acknowledged), by a read-only query."""
    if not path.exists():
        return []
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        ) as db:
            return [
                LoggedGap(instrument, run, first, last, count, reason)
                for instrument, run, first, last, count, reason in db.execute(
                    "SELECT instrument, run, first_seq, last_seq, count, reason FROM gaps"
                )
            ]
    except sqlite3.OperationalError:
        return []


def spool_taken_before(path: Path, ts: float) -> dict[str, int]:
    """Rows per wire run a running agent's spool holds of samples taken before `ts`."""
    if not path.exists():
        return {}
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        ) as db:
            return dict(
                db.execute(
                    "SELECT run, count(*) FROM samples WHERE ts < ? GROUP BY run", (ts,)
                ).fetchall()
            )
    except sqlite3.OperationalError:
        return {}
