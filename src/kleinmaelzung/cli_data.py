"""`kmz log`, `kmz history`, `kmz export`: getting data out of the hub from the command line.

Part of `kmz` (`cli`), in a module of its own because `cli` is long; like
it, this module prints, and imports nothing but the standard library until
a command runs. Times (``--since``, ``--until``) are ``-1h``-style relative
times, ISO 8601 (local time unless they name a zone) or UNIX seconds; they
are turned into UNIX seconds here, before the hub is asked.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any, Literal


class UsageError(Exception):
    """A command line that parsed but makes no sense; `kmz` exits 2."""


#: What argparse takes for a value, not an option, when it starts with "-":
#: its negative numbers, and relative times (``--since -1h``).
_NEGATIVE = re.compile(r"^-(\d+(\.\d+)?(ms|s|m|h|d|w)?|\.\d+)$")


def _relative_times_are_values(parser: argparse.ArgumentParser) -> None:
    # argparse reads "-1h" as an unknown option unless it looks like a
    # negative number: widen what does (its one hook for this, private).
    parser._negative_number_matcher = _NEGATIVE


TIME_HELP = "-90s, -15m, -1h, -2d, an ISO time such as 2026-11-01T03:12 (local), or UNIX seconds"


def add_log_parser(commands: Any, hub_option: Any, positive_int: Any) -> None:
    """The `kmz log` subcommand and its filters."""
    log = commands.add_parser(
        "log", help="print traffic-log entries: the newest, or those matching filters"
    )
    log.add_argument("--instrument", default=None, help="only this instrument's (or pattern's)")
    log.add_argument(
        "--kind",
        default=None,
        help="only entries of this kind: a message type, 'command' (commands and their "
        "replies), 'refused' (auth failures, limit breaches, bad frames) or 'raw' (transcripts)",
    )
    log.add_argument("--since", default=None, help=f"from this time on ({TIME_HELP})")
    log.add_argument("--until", default=None, help="before this time")
    log.add_argument("--peer", default=None, help="only to or from this peer (a glob: 'client-*')")
    log.add_argument("--direction", choices=("in", "out"), default=None)
    log.add_argument("--text", default=None, help="only messages containing this text")
    log.add_argument("--oldest", action="store_true", help="start from the oldest match")
    log.add_argument("--cursor", default=None, help="continue where a previous page ended")
    log.add_argument("--limit", type=positive_int, default=None, help="entries (default 20)")
    log.add_argument(
        "--all", action="store_true", help="every match, streamed (NDJSON with --json)"
    )
    log.add_argument("--json", action="store_true", help="print a JSON array")
    log.add_argument(
        "--stats",
        action="store_true",
        help="instead: rows, size and oldest entry of each kind, and how long each is kept",
    )
    log.add_argument(
        "--timeline",
        metavar="INSTRUMENT",
        default=None,
        help="instead: when the instrument was online, offline or faulted, and why",
    )
    log.add_argument(
        "--agent-timeline", metavar="AGENT", default=None, help="the same for an agent"
    )
    log.add_argument(
        "--raw",
        metavar="INSTRUMENT",
        default=None,
        help="instead: the raw bytes of the instrument's port taken by transcripts "
        "(kmz send INSTRUMENT transcript duration_s=60 starts one), and who asked for them",
    )
    hub_option(log)
    _relative_times_are_values(log)


def add_history_parser(commands: Any, hub_option: Any, positive_int: Any) -> None:
    """The `kmz history` subcommand."""
    history = commands.add_parser(
        "history", help="an instrument's channels over a time range, downsampled by the hub"
    )
    history.add_argument("instrument")
    history.add_argument("--since", default="-1h", help=f"start (default -1h; {TIME_HELP})")
    history.add_argument("--until", default=None, help="end (default now)")
    history.add_argument(
        "--channel", action="append", default=[], help="only this channel (repeatable)"
    )
    history.add_argument("--every", default=None, help="bucket width: 10s, 1m, 1h, ...")
    history.add_argument(
        "--points", type=positive_int, default=None, help="buckets when --every is not given"
    )
    history.add_argument("--json", action="store_true", help="print the hub's answer as JSON")
    hub_option(history)
    _relative_times_are_values(history)


def add_export_parser(commands: Any, hub_option: Any) -> None:
    """The `kmz export` subcommand."""
    export = commands.add_parser(
        "export", help="write logged samples to a CSV or Parquet file, streamed"
    )
    export.add_argument(
        "--instrument", default="*", help="an instrument id or pattern (default: all you may see)"
    )
    export.add_argument(
        "--since", default=None, help=f"start (default: the beginning; {TIME_HELP})"
    )
    export.add_argument("--until", default=None, help="end (default now)")
    export.add_argument("--channel", action="append", default=[], help="only this channel")
    export.add_argument("--format", choices=("csv", "parquet"), default=None)
    export.add_argument(
        "-o", "--output", required=True, help="the file to write (the format from its suffix)"
    )
    hub_option(export)
    _relative_times_are_values(export)


def add_replay_parser(commands: Any, hub_option: Any) -> None:
    """The `kmz replay` subcommand."""
    replay = commands.add_parser(
        "replay",
        help="publish logged samples again through the hub, as replay.ID instruments",
    )
    replay.add_argument("--since", required=True, help=f"start ({TIME_HELP})")
    replay.add_argument("--until", default=None, help="end (default now)")
    replay.add_argument("--instrument", default="*", help="an id or a pattern (default '*')")
    replay.add_argument(
        "--speed", type=float, default=1.0, help="how many times as fast as taken (default 1)"
    )
    replay.add_argument(
        "--prefix", default="replay.", help="before each replayed id (default 'replay.')"
    )
    replay.add_argument("--agent-id", default="replay", help="the replay agent's id")
    hub_option(replay)
    _relative_times_are_values(replay)


def cmd_replay(args: argparse.Namespace) -> int:
    """`kmz replay`: one line per replayed instrument at the end."""
    from .cli import EXIT_OK, _hub_url, _run_client, _token
    from .client.replay import replay

    since = _seconds(args.since, "--since")
    until = _seconds(args.until, "--until") or time.time()
    assert since is not None
    if args.speed <= 0:
        raise UsageError(f"--speed must be above 0, got {args.speed:g}")
    url = _hub_url(args)

    async def run() -> int:
        try:
            result = await replay(
                url,
                since=since,
                until=until,
                instrument=_pattern(args.instrument) or "*",
                speed=args.speed,
                prefix=args.prefix,
                agent_id=args.agent_id,
                token=_token(url),
                **_trust(args),
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        for original, replayed in sorted(result.ids.items()):
            print(f"{original} -> {replayed}: {result.samples[replayed]} samples")
        return EXIT_OK

    return _run_client("replay", run())


def _seconds(text: str | None, option: str) -> float | None:
    from .protocol import TimeFormatError, parse_time

    if text is None:
        return None
    try:
        return parse_time(text, now=time.time(), zone=None)
    except TimeFormatError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _trust(args: argparse.Namespace) -> dict[str, Any]:
    """The hub certificate to accept: `--ca` and `--pin` where `kmz` has them."""
    return {"ca_file": getattr(args, "ca", None), "pin_sha256": getattr(args, "pin", None)}


def _pattern(text: str | None) -> str | None:
    from .protocol import is_pattern

    if text is not None and not is_pattern(text):
        raise UsageError(f"not an instrument id or pattern: {text!r}")
    return text


def cmd_log(args: argparse.Namespace) -> int:
    """`kmz log`: a page of entries (oldest printed first), or every match with --all."""
    import msgspec

    from .cli import EXIT_OK, _hub_url, _run_client, _token
    from .client import LogFilter, query_log, stream_log
    from .client.formatting import format_log_entry, needs_date, today_from

    if args.stats:
        return _log_stats(args)
    if args.timeline is not None or args.agent_timeline is not None:
        return _timeline(args)
    if args.raw is not None:
        return _raw(args)
    since = _seconds(args.since, "--since")
    where = LogFilter(
        since=since,
        until=_seconds(args.until, "--until"),
        instrument=_pattern(args.instrument),
        peer=args.peer,
        direction=args.direction,
        kind=args.kind,
        text=args.text,
        oldest_first=args.oldest,
    )
    url = _hub_url(args)

    async def run() -> int:
        token = _token(url)
        if args.all:
            # Streamed: no look ahead, so dated unless it all lies in today.
            dated = not today_from(since, time.time())
            async for entry in stream_log(
                url, where, limit=args.limit, token=token, **_trust(args)
            ):
                if args.json:
                    print(msgspec.json.encode(entry).decode())
                else:
                    print(format_log_entry(entry, dated=dated))
            return EXIT_OK
        page = await query_log(
            url, where, limit=args.limit or 20, cursor=args.cursor, token=token, **_trust(args)
        )
        if args.json:
            print(msgspec.json.encode(page.entries).decode())
        else:
            # Oldest first, like a log file.
            shown = page.entries if args.oldest else list(reversed(page.entries))
            dated = needs_date((e.ts for e in shown), time.time())
            for entry in shown:
                print(format_log_entry(entry, dated=dated))
        if page.next_cursor is not None and sys.stderr.isatty():
            print(f"(more: add --cursor {page.next_cursor}, or --all)", file=sys.stderr)
        return EXIT_OK

    return _run_client("log", run())


def _raw(args: argparse.Namespace) -> int:
    """`kmz log --raw ID`: a transcript's bytes and the commands that started it, oldest first."""
    import msgspec

    from .cli import EXIT_OK, _hub_url, _run_client, _token
    from .client import LogFilter, query_log
    from .client.formatting import format_raw_entry, needs_date
    from .protocol import RAW, TRANSCRIPT, is_instrument_id

    if not is_instrument_id(args.raw):
        raise UsageError(f"--raw takes an instrument id, not {args.raw!r}")
    since, until = _seconds(args.since, "--since"), _seconds(args.until, "--until")
    url = _hub_url(args)
    limit = args.limit or 200

    async def run() -> int:
        token = _token(url)
        raw = await query_log(
            url,
            LogFilter(since=since, until=until, instrument=args.raw, kind=RAW),
            limit=limit,
            cursor=args.cursor,
            token=token,
            **_trust(args),
        )
        started = await query_log(
            url,
            LogFilter(since=since, until=until, instrument=args.raw, kind=TRANSCRIPT),
            limit=limit,
            token=token,
            **_trust(args),
        )
        commands = started.entries
        oldest = raw.entries[-1].id if raw.next_cursor is not None and raw.entries else 0
        # Newest first from the hub; a transcript reads oldest first.
        shown = sorted(raw.entries + [c for c in commands if c.id > oldest], key=lambda e: e.id)
        if args.json:
            print(msgspec.json.encode(shown).decode())
        else:
            dated = needs_date((e.ts for e in shown), time.time())
            for entry in shown:
                print(format_raw_entry(entry, dated=dated))
            if not shown:
                print(
                    f"no raw transcript of {args.raw} in the log; start one with: "
                    f"kmz send {args.raw} transcript duration_s=60",
                    file=sys.stderr,
                )
        if raw.next_cursor is not None and sys.stderr.isatty():
            print(f"(more: add --cursor {raw.next_cursor})", file=sys.stderr)
        return EXIT_OK

    return _run_client("log", run())


def _log_stats(args: argparse.Namespace) -> int:
    """`kmz log --stats`: a table of the log's kinds."""
    import msgspec

    from .cli import EXIT_OK, _hub_url, _run_client, _token
    from .client import fetch_log_stats

    url = _hub_url(args)

    async def run() -> int:
        stats = await fetch_log_stats(url, token=_token(url), **_trust(args))
        if args.json:
            print(msgspec.json.encode(stats).decode())
            return EXIT_OK
        print(f"{'kind':<12} {'rows':>12} {'size':>10}  {'oldest':<19}  kept")
        for kind in stats.kinds:
            oldest = _local_time(kind.oldest) if kind.oldest is not None else "-"
            days = kind.retention_days
            kept = f"{days:g} day{'' if days == 1 else 's'}" if days else "forever"
            print(f"{kind.kind:<12} {kind.rows:>12,} {_size(kind.bytes):>10}  {oldest:<19}  {kept}")
        print(f"on disk: {_size(stats.total_bytes)} ({stats.backend}, indexes included)")
        return EXIT_OK

    return _run_client("log", run())


def _timeline(args: argparse.Namespace) -> int:
    """`kmz log --timeline ID`: one line per change of state, oldest first."""
    import msgspec

    from .cli import EXIT_OK, _hub_url, _run_client, _token
    from .client import fetch_timeline

    url = _hub_url(args)
    since, until = _seconds(args.since, "--since"), _seconds(args.until, "--until")

    async def run() -> int:
        found = await fetch_timeline(
            url,
            args.timeline,
            agent=args.agent_timeline,
            since=since,
            until=until,
            token=_token(url),
            **_trust(args),
        )
        if args.json:
            print(msgspec.json.encode(found).decode())
            return EXIT_OK
        for change in found.changes:
            why = f" ({change.reason})" if change.reason and change.reason != change.cause else ""
            print(f"{_local_time(change.ts)}  {change.state:<8} {change.cause}{why}")
        if not found.changes:
            print(f"nothing logged of {found.id}", file=sys.stderr)
        return EXIT_OK

    return _run_client("log", run())


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def cmd_history(args: argparse.Namespace) -> int:
    """`kmz history`: per bucket, each channel's mean with its min, max and count."""
    import msgspec

    from .cli import EXIT_OK, _hub_url, _run_client, _token
    from .client import fetch_history
    from .protocol import is_instrument_id, is_name

    if not is_instrument_id(args.instrument):
        raise UsageError(f"not an instrument id: {args.instrument!r}")
    bad = [c for c in args.channel if not is_name(c)]
    if bad:
        raise UsageError(f"not a channel name: {bad[0]!r}")
    since = _seconds(args.since, "--since")
    until = _seconds(args.until, "--until")
    url = _hub_url(args)

    async def run() -> int:
        history = await fetch_history(
            url,
            args.instrument,
            since=since if since is not None else "-1h",
            until=until,
            channels=args.channel,
            every=args.every,
            points=args.points,
            token=_token(url),
            **_trust(args),
        )
        if args.json:
            print(msgspec.json.encode(history).decode())
            return EXIT_OK
        _print_history(history)
        return EXIT_OK

    return _run_client("history", run())


def _print_history(history: Any) -> None:
    from .protocol.export import column_name

    names = [c.name for c in history.channels]
    headers = ["time"] + [column_name(c) for c in history.channels]
    rows = []
    for index, ts in enumerate(history.t):
        cells = [_local_time(ts)]
        for name in names:
            series = history.series[name]
            if series.count[index] == 0:
                cells.append("-")
            else:
                cells.append(
                    f"{series.mean[index]:.6g} ({series.min[index]:.6g}..{series.max[index]:.6g},"
                    f" n={series.count[index]})"
                )
        rows.append(cells)
    if not rows:
        print(f"no samples of {history.instrument} in that range", file=sys.stderr)
        return
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"every {history.every:g} s; mean (min..max, n=samples)", file=sys.stderr)


def _local_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def cmd_export(args: argparse.Namespace) -> int:
    """`kmz export`: samples to a file, with a progress line on a terminal."""
    from .cli import EXIT_OK, _hub_url, _run_client, _token
    from .client import export

    output = args.output
    parquet = args.format == "parquet" or (args.format is None and output.endswith(".parquet"))
    output_format: Literal["csv", "parquet"] = "parquet" if parquet else "csv"
    if args.format is None and not output.endswith((".csv", ".parquet")):
        raise UsageError("--format csv or parquet (or name the file .csv or .parquet)")
    since = _seconds(args.since, "--since")
    until = _seconds(args.until, "--until")
    pattern = _pattern(args.instrument) or "*"
    url = _hub_url(args)
    progress = _Progress() if sys.stderr.isatty() else None

    async def run() -> int:
        try:
            result = await export(
                url,
                output,
                instrument=pattern,
                since=since,
                until=until,
                channels=args.channel,
                format=output_format,
                on_progress=progress.show if progress else None,
                token=_token(url),
                **_trust(args),
            )
        finally:
            if progress is not None:
                progress.end()
        note = (
            f" ({result.mismatched} values of another type left empty)" if result.mismatched else ""
        )
        print(f"wrote {result.rows:,} rows to {result.path}{note}")
        return EXIT_OK

    return _run_client("export", run())


class _Progress:
    """One line on the terminal, rewritten at most ten times a second."""

    def __init__(self) -> None:
        self._shown = 0.0
        self._started = time.monotonic()
        self._drawn = False

    def show(self, rows: int, expected: int | None) -> None:
        now = time.monotonic()
        if now - self._shown < 0.1:
            return
        self._shown = now
        rate = rows / max(now - self._started, 1e-6)
        if expected:
            share = min(rows / expected, 1.0)
            bar = "#" * int(share * 30)
            line = f"[{bar:<30}] {rows:,}/{expected:,} rows {share:4.0%}  {rate:,.0f}/s"
        else:
            line = f"{rows:,} rows  {rate:,.0f}/s"
        sys.stderr.write("\r" + line)
        sys.stderr.flush()
        self._drawn = True

    def end(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
