"""`kmz instrument-meta get|set`: an instrument's metadata (location, group, ...) at the hub.

Like `cli_fleet`, this module imports nothing but the standard library until a
command runs, so `kmz agent` on a Pi never loads it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

#: The fields, as options (`--calibration-interval` takes days).
_TEXT_FIELDS = ("description", "location", "group", "owner")


def _days(text: str) -> int | None:
    """A positive number of days, or "" / "none" for no interval."""
    if text.strip().lower() in ("", "none"):
        return None
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of days such as 365, got {text!r}"
        ) from None
    if days <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of days, got {days}")
    return days


def add_instrument_meta_commands(
    commands: Any, hub_option: Any, trust_options: Any | None = None
) -> None:
    """The `instrument-meta` subcommand and its actions."""
    parser = commands.add_parser(
        "instrument-meta",
        help="read or set an instrument's location, group, owner, description, interval (admin)",
        description="Metadata held at the hub: the dashboard groups by it, calibration records "
        "and due dates use it. What is set here wins over the description in the agent's file.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    get = actions.add_parser("get", help="print what the hub holds of an instrument")
    get.add_argument("instrument", metavar="INSTRUMENT")
    get.add_argument("--json", action="store_true", help="print JSON")
    set_ = actions.add_parser(
        "set",
        help="change the fields given (an empty value clears one)",
        description="Fields not given keep their value. --file takes a JSON or TOML table "
        "of all of them (description, location, group, owner, calibration_interval_days); "
        "options given beside it win.",
    )
    set_.add_argument("instrument", metavar="INSTRUMENT")
    for name in _TEXT_FIELDS:
        set_.add_argument(f"--{name}", default=None, metavar="TEXT")
    set_.add_argument(
        "--calibration-interval",
        type=_days,
        default=argparse.SUPPRESS,
        metavar="DAYS",
        help="days from a passed calibration to the next ('none' clears it)",
    )
    set_.add_argument("--file", default=None, metavar="FILE", help="JSON or TOML ('-': stdin)")
    set_.add_argument("--json", action="store_true", help="print the result as JSON")
    for action in (get, set_):
        hub_option(action)


def cmd_instrument_meta(args: argparse.Namespace) -> int:
    """Run `kmz instrument-meta ACTION`."""
    import msgspec

    from .cli import EXIT_OK, EXIT_USAGE, _hub_url, _run_client, _token, _trust
    from .client import get_instrument_metadata, set_instrument_metadata
    from .protocol import InstrumentMetadata, MetadataView, is_instrument_id

    if not is_instrument_id(args.instrument):
        print(f"kmz instrument-meta: not an instrument id: {args.instrument!r}", file=sys.stderr)
        return EXIT_USAGE
    url = _hub_url(args)
    credentials = {"token": _token(url), **_trust(args)}
    base: InstrumentMetadata | None = None
    if args.action == "set" and args.file is not None:
        try:
            base = _read_file(args.file)
        except (OSError, ValueError) as exc:
            print(f"kmz instrument-meta: {args.file}: {exc}", file=sys.stderr)
            return EXIT_USAGE

    def show(view: MetadataView) -> None:
        if args.json:
            print(msgspec.json.format(msgspec.json.encode(view)).decode())
            return
        meta = view.metadata
        interval = meta.calibration_interval_days
        shown_from = "hub" if meta.description else ("agent" if view.description else "")
        rows = [
            ("instrument", view.instrument),
            (
                "description",
                view.description + (f"  (from the {shown_from})" if shown_from else ""),
            ),
            ("location", meta.location),
            ("group", meta.group),
            ("owner", meta.owner),
            ("calibration interval", f"{interval} days" if interval else ""),
        ]
        if view.updated_by is not None:
            when = ""
            if view.updated_at is not None:
                from .protocol import format_time

                when = f" at {format_time(view.updated_at)}"
            rows.append(("changed", f"by {view.updated_by}{when}"))
        for name, value in rows:
            print(f"{name + ':':<22}{value or '-'}")

    async def run() -> int:
        view = await get_instrument_metadata(url, args.instrument, **credentials)
        if args.action == "get":
            show(view)
            return EXIT_OK
        metadata = base if base is not None else view.metadata
        changes: dict[str, Any] = {
            name: getattr(args, name) for name in _TEXT_FIELDS if getattr(args, name) is not None
        }
        if hasattr(args, "calibration_interval"):
            changes["calibration_interval_days"] = args.calibration_interval
        metadata = msgspec.structs.replace(metadata, **changes)
        show(await set_instrument_metadata(url, args.instrument, metadata, **credentials))
        return EXIT_OK

    return _run_client("instrument-meta", run())


def _read_file(name: str) -> Any:
    """The metadata in a JSON or TOML file; ValueError naming the key if it is not."""
    import tomllib

    import msgspec

    from .protocol import InstrumentMetadata

    text = sys.stdin.read() if name == "-" else Path(name).read_text("utf-8")
    try:
        if text.lstrip().startswith("{"):
            return msgspec.json.decode(text.encode(), type=InstrumentMetadata)
        return msgspec.convert(tomllib.loads(text), type=InstrumentMetadata)
    except (msgspec.ValidationError, msgspec.DecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(str(exc)) from None
