"""How the CLI shows samples, statuses, instruments and log entries (pure functions).

Every string a peer chose (a kind, a unit, a reason, a client's name, a
string value) goes through `printable` on its way to the terminal: an ANSI
escape in an instrument's `kind` must not clear or retitle an operator's
terminal, nor a newline forge a line.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from ..protocol import AgentRecord, Gap, InstrumentRecord, Missed, Sample, Status, printable
from .log import LogEntry


def clock(ts: float) -> str:
    """A local wall-clock time with milliseconds: 12:03:04.123."""
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def format_value(value: float | bool | str, unit: str = "") -> str:
    """One channel value, with its unit when it has one."""
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        if abs(value) >= 1e6 or (value and abs(value) < 1e-3):
            text = f"{value:.6g}"
        else:
            # Two or three decimals: columns of a live watch stay put, and a
            # balance's milligrams survive.
            text = f"{value:.3f}"
            text = text[:-1] if text.endswith("0") else text
    else:
        text = printable(str(value))
    return f"{text} {printable(unit)}" if unit else text


def format_sample(sample: Sample, units: dict[str, dict[str, str]] | None = None) -> str:
    """A human line: time, instrument, channel=value unit ..."""
    channel_units = (units or {}).get(sample.instrument, {})
    values = "  ".join(
        f"{printable(name)}={format_value(value, channel_units.get(name, ''))}"
        for name, value in sample.values.items()
    )
    if sample.corrected:
        # A calibrated channel: its corrected value (as the hub rounded it, a
        # digit finer than the display) and the calibration behind it.
        values += "  corrected: " + "  ".join(
            f"{printable(name)}={value!r}"
            + (f" {printable(channel_units[name])}" if channel_units.get(name) else "")
            for name, value in sample.corrected.items()
        )
        values += f" ({printable(sample.calibration or '')})"
    return f"{clock(sample.ts)}  {sample.instrument}  {values}"


def sample_json(sample: Sample) -> str:
    """One JSON object per line, as `kmz watch --json` prints."""
    return msgspec.json.encode(sample).decode()


def format_status(status: Status) -> str:
    """A status change as a line."""
    reason = f" ({printable(status.reason)})" if status.reason else ""
    return f"{clock(status.ts)}  {status.instrument}  is {status.state}{reason}"


def format_gap(gap: Gap) -> str:
    """Samples that will never arrive, as a line."""
    seqs = (
        f"seq {gap.first_seq}"
        if gap.first_seq == gap.last_seq
        else (f"seqs {gap.first_seq}..{gap.last_seq}")
    )
    return (
        f"{gap.instrument}  missed {gap.count} samples ({seqs} of run {printable(gap.run)}): "
        f"{printable(gap.reason)}"
    )


def format_missed(missed: Missed) -> str:
    """Samples this client fell too far behind to get, as a line."""
    seqs = (
        f"seq {missed.first_seq}"
        if missed.first_seq == missed.last_seq
        else f"seqs {missed.first_seq}..{missed.last_seq}"
    )
    return (
        f"{missed.instrument}  missed {missed.count} samples ({seqs}): this client fell "
        "behind; they are in the hub's log"
    )


def units_of(records: list[InstrumentRecord]) -> dict[str, dict[str, str]]:
    """Channel units by instrument and channel."""
    return {r.id: {c.name: c.unit for c in r.channels} for r in records}


def ago(seconds: float | None) -> str:
    """A compact 'how long ago'."""
    if seconds is None:
        return "never"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def format_instruments(records: list[InstrumentRecord], now: float) -> str:
    """A table of instruments with state, agent, last seen and channels."""
    if not records:
        return "no instruments (is an agent connected?)"
    header = ("INSTRUMENT", "KIND", "STATE", "AGENT", "LAST SEEN", "CHANNELS")
    rows = [header]
    for r in records:
        state = r.state + (f" ({printable(r.reason)})" if r.reason else "")
        seen = ago(None if r.last_seen is None else max(0.0, now - r.last_seen))
        channels = ", ".join(
            f"{c.name} [{printable(c.unit)}]" if c.unit else c.name for c in r.channels
        )
        rows.append((r.id, printable(r.kind), state, r.agent, seen, channels))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def format_agents(records: list[AgentRecord], now: float) -> str:
    """A table of every agent the hub has seen: state, host, software, configuration,
    spool, clock, instruments."""
    if not records:
        return "no agents seen"
    header = (
        "AGENT",
        "STATE",
        "HOST",
        "SOFTWARE",
        "UPTIME",
        "CONFIG",
        "SPOOL",
        "OLDEST UNACKED",
        "DROPPED",
        "CLOCK",
        "INSTRUMENTS",
    )
    rows = [header]
    for r in records:
        if r.online and r.connected_since is not None:
            state = f"online {ago(max(0.0, now - r.connected_since)).replace(' ago', '')}"
        elif r.last_disconnected is not None:
            state = f"offline, left {ago(max(0.0, now - r.last_disconnected))}"
        else:
            state = "offline"
        uptime = "-" if r.uptime_s is None else ago(r.uptime_s).replace(" ago", "")
        if r.config_revision is None:
            config = "?"
        else:
            source = "file" if r.config_revision == 0 else f"rev {r.config_revision}"
            config = f"{source}, {r.remote_config or '?'}s remote"
        spool = "?" if r.spool_depth is None else str(r.spool_depth)
        oldest = "-" if r.spool_oldest is None else ago(max(0.0, now - r.spool_oldest))
        dropped = "?" if r.dropped is None else str(r.dropped)
        if r.clock_offset_s is None:
            clock_text = "?"
        else:
            clock_text = f"{r.clock_offset_s:+.3f} s" + ("" if r.clock_ok else " OFF")
        instruments = ", ".join(
            f"{i} (seq {r.logged_seqs[i]})" if i in r.logged_seqs else i for i in r.instruments
        )
        rows.append(
            (
                r.id,
                state,
                printable(r.host) or "?",
                printable(r.software.removeprefix("kleinmaelzung/")) or "?",
                uptime,
                config,
                spool,
                oldest,
                dropped,
                clock_text,
                instruments,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def needs_date(timestamps: Iterable[float], now: float) -> bool:
    """Whether log lines at these times show their date: unless every one is of today (local).

    A page of the last minutes stays compact (``03:12:00.250``); one that
    reaches into yesterday, or lies wholly in another day, dates every line
    (``2026-11-01 03:12:00.250``), so entries of different days never look
    alike and an old day is never read as today.
    """
    today = datetime.fromtimestamp(now).date()
    return any(datetime.fromtimestamp(ts).date() != today for ts in timestamps)


def today_from(since: float | None, now: float) -> bool:
    """Whether all from `since` to `now` is of today (local): a stream's lines need no date."""
    if since is None:
        return False
    return datetime.fromtimestamp(since).date() == datetime.fromtimestamp(now).date()


def log_time(ts: float, dated: bool = False) -> str:
    """A log line's local time with milliseconds, after its date when `dated`."""
    moment = time.strftime("%Y-%m-%d %H:%M:%S" if dated else "%H:%M:%S", time.localtime(ts))
    return f"{moment}.{int(ts * 1000) % 1000:03d}"


def format_log_entry(entry: LogEntry, width: int = 100, *, dated: bool = False) -> str:
    """One traffic-log line: time (dated or not), direction, peer, instrument, type, message."""
    arrow = "<-" if entry.direction == "in" else "->"
    # JSON escapes C0 controls, but not C1 (U+009B is a CSI) nor bidi overrides.
    body = printable(msgspec.json.encode(entry.message).decode(), width)
    instrument = printable(entry.instrument or "-")
    peer = printable(entry.peer)  # logged by older hubs as the client named itself
    when = log_time(entry.ts, dated)
    return f"{when}  {arrow} {peer:<20} {instrument:<14} {entry.type:<16} {body}"


def format_raw_entry(entry: LogEntry, *, dated: bool = False) -> str:
    """One line of a raw transcript (`kmz log --raw`): the agent's time, tx/rx, the bytes.

    The bytes stay escaped as the hub logged them (``\\r``, ``\\xNN``): a
    garbled byte shows as what it was. A ``transcript`` entry (who asked for
    one, for how long) is a line of its own.
    """
    message = entry.message_object()
    if entry.type == "transcript":
        duration = message.get("duration_s", "?")
        rate = message.get("max_bytes_per_s", "?")
        what = "stop" if duration == 0 else f"for {duration:g} s at {rate} B/s"
        return f"{log_time(entry.ts, dated)}  transcript {what} asked by {printable(entry.peer)}"
    ts = message.get("ts")
    when = log_time(ts if isinstance(ts, int | float) else entry.ts, dated)
    direction = message.get("direction", "?")
    # The hub admits only escaped ASCII here; printable() guards older or odd entries.
    data = printable(str(message.get("data", "")), 10_000)
    dropped = message.get("dropped") or 0
    note = f"  ({dropped} bytes left out before, over the rate)" if dropped else ""
    return f"{when}  {direction}  {data}{note}"


def parse_assignment(text: str) -> tuple[str, Any]:
    """KEY=VALUE: the value as JSON when it parses (80, true, "x"), else as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    try:
        value: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        value = raw
    return key, value


def format_result(result: Any) -> str:
    """A command result for humans: `ok` and the result, if any."""
    if result in (None, {}, []):
        return "ok"
    if isinstance(result, dict):
        return "ok  " + "  ".join(
            f"{printable(str(k))}="
            + (format_value(v) if isinstance(v, float | bool | str) else printable(str(v)))
            for k, v in result.items()
        )
    return f"ok  {printable(str(result))}"
