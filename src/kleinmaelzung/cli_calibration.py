"""`kmz calibration ...`: the calibration commands of the CLI (part of `cli`, which prints).

Imports nothing but the standard library at module level, like `cli`:
the client and the calibration package load when a command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

_REGISTRIES = ("laboratory", "standard", "instrument", "procedure")


def add_calibration_commands(commands: Any) -> None:
    """Add `kmz calibration` and its actions to the CLI's subcommands."""
    from .cli import _hub_option, _positive_int

    calibration = commands.add_parser(
        "calibration",
        help="calibration records, certificates, due dates, guided runs",
        description="Calibrations kept by the hub: run one at the bench, list, show, sign, "
        "approve, download the certificate, see what is due.",
    )
    actions = calibration.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="calibrations, the latest revision of each")
    listing.add_argument("--instrument", default=None, help="only this instrument's")
    listing.add_argument("--json", action="store_true", help="print JSON")

    show = actions.add_parser("show", help="one calibration: points, verdict, signatures")
    show.add_argument("number", metavar="ID", help="certificate number, e.g. KMZ-2026-0001")
    show.add_argument("--revision", type=_positive_int, default=None)
    show.add_argument("--json", action="store_true", help="print the record as JSON")

    for name, words in (
        ("sign", "sign as the person who performed the calibration"),
        ("approve", "approve (admin; not the performer): immutable, applied to the stream"),
    ):
        action = actions.add_parser(name, help=words)
        action.add_argument("number", metavar="ID")
        action.add_argument("--name", default="", help="your full name as printed (default: user)")
        if name == "approve":
            action.add_argument(
                "--failed",
                action="store_true",
                help="approve a calibration whose result fails (or one not to apply): "
                "kept and signed, applied to nothing; the correction in force ends",
            )

    for name, words in (
        ("correct", "start a new revision of an approved calibration"),
        ("withdraw", "stop applying a calibration to the live stream (admin)"),
    ):
        action = actions.add_parser(name, help=words)
        action.add_argument("number", metavar="ID")
        action.add_argument("--reason", required=True, help="why (kept in the record and log)")

    pdf = actions.add_parser("pdf", help="download the certificate PDF")
    pdf.add_argument("number", metavar="ID")
    pdf.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    pdf.add_argument("--revision", type=_positive_int, default=None)

    due = actions.add_parser("due", help="instruments overdue or due for calibration")
    due.add_argument("--days", type=int, default=30, help="due within N days (default 30)")
    due.add_argument("--json", action="store_true", help="print JSON")

    register = actions.add_parser(
        "register", help="register a laboratory, standard, instrument or procedure (admin)"
    )
    register.add_argument("kind", choices=_REGISTRIES)
    register.add_argument("file", type=Path, metavar="FILE.toml")

    run = actions.add_parser(
        "run",
        help="calibrate an instrument at the bench, guided point by point",
        description="Walks you through the procedure's points: apply what it asks, press "
        "Enter, watch the live value; each reading is captured when it is stable. Answers "
        "come from stdin, so a script can pipe them in.",
    )
    run.add_argument("instrument")
    run.add_argument("--procedure", required=True, metavar="NAME")
    run.add_argument("--version", type=_positive_int, default=None, help="procedure version")
    run.add_argument(
        "--standard",
        action="append",
        default=[],
        metavar="ID",
        help="a reference standard used (repeatable); an expired one is refused",
    )
    run.add_argument(
        "--as-left",
        action="store_true",
        help="after the as-found readings, adjust and take as-left readings",
    )
    run.add_argument("--sign", action="store_true", help="sign as performed at the end")
    run.add_argument("--name", default="", help="your full name for the signature")
    run.add_argument(
        "--yes", action="store_true", help="answer Enter to every question (nothing to apply)"
    )
    run.add_argument(
        "--settle-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give up on a point that is not stable within this (default 60)",
    )
    for parser in actions.choices.values():
        _hub_option(parser)


def run_calibration_command(args: argparse.Namespace) -> int:
    """Run one `kmz calibration` action."""
    from .cli import _hub_url, _run_client, _token

    url = _hub_url(args)
    handler = _ACTIONS[args.action]
    return _run_client(f"calibration {args.action}", handler(args, url, _token(url)))


# --- actions -----------------------------------------------------------------------


async def _list(args: argparse.Namespace, url: str, token: str | None) -> int:
    import msgspec

    from .client.calibrations import Calibrations

    records = await Calibrations(url, token=token).records(args.instrument)
    if args.json:
        print(msgspec.json.encode(records).decode())
        return 0
    rows = [("certificate", "rev", "instrument", "calibrated", "state")]
    rows += [
        (
            r.certificate_number,
            str(r.revision),
            r.instrument_id,
            r.calibrated_on.isoformat(),
            "approved" if r.approved else "draft",
        )
        for r in records
    ]
    _table(rows)
    return 0


async def _show(args: argparse.Namespace, url: str, token: str | None) -> int:
    import msgspec

    from .client.calibrations import Calibrations

    view = await Calibrations(url, token=token).get(args.number, args.revision)
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(view)).decode())
        return 0
    record = view.record
    unit = record.procedure.unit
    state = "approved" if view.approved else ("signed" if record.signatures else "draft")
    print(f"{record.certificate_number} revision {record.revision}  {state}")
    print(
        f"instrument {record.instrument.id}: {record.instrument.manufacturer} "
        f"{record.instrument.model}, serial {record.instrument.serial_number}"
    )
    print(
        f"procedure {record.procedure.name} version {record.procedure.version}; "
        f"calibrated on {record.calibrated_on.isoformat()}"
    )
    for standard in record.standards:
        print(
            f"standard {standard.id}: certificate {standard.certificate_number}, due {standard.due}"
        )
    for condition in record.environment:
        how = "entered" if condition.manual else f"from {condition.source}"
        low, high = condition.minimum, condition.maximum
        print(f"{condition.name}: {low:g} to {high:g} {condition.unit} ({how})")
    rows = [("phase", "point", f"nominal/{unit}", "n", "mean", "error", "U", "tolerance", "")]
    for p in view.points:
        rows.append(
            (
                p.phase.replace("_", "-"),
                str(p.index + 1),
                f"{p.nominal:g}",
                str(p.n),
                f"{p.mean:.6g}",
                f"{p.error:+.3g}",
                f"{p.expanded:.2g}",
                f"±{p.tolerance:g}",
                p.verdict + (" (manual)" if p.manual_readings else ""),
            )
        )
    if view.points:
        _table(rows)
    if view.verdict:
        print(f"conformity: {view.verdict} ({record.procedure.decision_rule.kind} acceptance)")
    for signature in record.signatures:
        print(
            f"{signature.meaning} by {signature.full_name} ({signature.user}) at "
            f"{signature.at.isoformat()}"
        )
    if view.correction is not None:
        print(f"applied to the live stream as {view.correction.calibration}")
    print(f"content hash {view.content_hash}")
    return 0


async def _sign(args: argparse.Namespace, url: str, token: str | None) -> int:
    from .client.calibrations import Calibrations

    view = await Calibrations(url, token=token).sign(args.number, args.name)
    print(f"{view.record.certificate_number} signed as performed; it awaits approval")
    return 0


async def _approve(args: argparse.Namespace, url: str, token: str | None) -> int:
    from .client.calibrations import Calibrations

    view = await Calibrations(url, token=token).approve(
        args.number, args.name, apply_correction=not args.failed
    )
    applied = (
        f"; applied to {view.record.instrument.id} as {view.correction.calibration}"
        if view.correction is not None
        else f"; {view.verdict or 'no result'}, applied to nothing"
    )
    print(f"{view.record.certificate_number} approved (hash {view.content_hash[:12]}){applied}")
    return 0


async def _correct(args: argparse.Namespace, url: str, token: str | None) -> int:
    from .client.calibrations import Calibrations

    view = await Calibrations(url, token=token).correct(args.number, args.reason)
    print(f"{view.record.certificate_number} revision {view.record.revision} started as a draft")
    return 0


async def _withdraw(args: argparse.Namespace, url: str, token: str | None) -> int:
    from .client.calibrations import Calibrations

    correction = await Calibrations(url, token=token).withdraw(args.number, args.reason)
    print(f"{correction.calibration} no longer applied to {correction.instrument_id}")
    return 0


async def _pdf(args: argparse.Namespace, url: str, token: str | None) -> int:
    from .client.calibrations import Calibrations

    body = await Calibrations(url, token=token).pdf(args.number, args.revision)
    args.output.write_bytes(body)
    print(f"wrote {args.output} ({len(body)} bytes)")
    return 0


async def _due(args: argparse.Namespace, url: str, token: str | None) -> int:
    import msgspec

    from .client.calibrations import Calibrations

    entries = await Calibrations(url, token=token).due(args.days)
    if args.json:
        print(msgspec.json.encode(entries).decode())
        return 0
    if not entries:
        print(f"nothing due within {args.days} days")
        return 0
    rows = [("instrument", "due", "state", "location")]
    for entry in entries:
        when = (
            f"{-entry.days_left} days ago" if entry.days_left < 0 else f"in {entry.days_left} days"
        )
        rows.append(
            (
                entry.instrument.id,
                f"{entry.next_due.isoformat()} ({when})",
                entry.state,
                entry.instrument.location,
            )
        )
    _table(rows)
    return 0


async def _register(args: argparse.Namespace, url: str, token: str | None) -> int:
    import tomllib

    import msgspec

    from .calibration import Instrument, Laboratory, ReferenceStandard
    from .cli import _UsageError
    from .client.calibrations import Calibrations

    api = Calibrations(url, token=token)
    try:
        text = args.file.read_text(encoding="utf-8")
    except OSError as exc:
        raise _UsageError(f"{args.file}: {exc.strerror or exc}") from None
    if args.kind == "procedure":
        procedure = await api.register_procedure(text, source=args.file.name)
        print(f"procedure {procedure.name} version {procedure.version} registered")
        return 0
    kinds: dict[str, type[Any]] = {
        "laboratory": Laboratory,
        "standard": ReferenceStandard,
        "instrument": Instrument,
    }
    try:
        value = msgspec.convert(tomllib.loads(text), kinds[args.kind])
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise _UsageError(f"{args.file}: {exc}") from None
    if args.kind == "laboratory":
        await api.register_laboratory(value)
    elif args.kind == "standard":
        await api.register_standard(value)
    else:
        await api.register_instrument(value)
    print(f"{args.kind} {getattr(value, 'id', getattr(value, 'name', ''))} registered")
    return 0


async def _run(args: argparse.Namespace, url: str, token: str | None) -> int:
    from .client import Client
    from .client.calibration_run import guided_run
    from .client.calibrations import Calibrations

    if TYPE_CHECKING:
        from .calibration.model import Phase
    operator = _Terminal(yes=args.yes)
    phases: tuple[Phase, ...] = ("as_found", "as_left") if args.as_left else ("as_found",)
    async with Client(url, name="kmz-calibration", token=token) as client:
        view = await guided_run(
            client,
            Calibrations(url, token=token),
            operator,
            instrument=args.instrument,
            procedure=args.procedure,
            standards=args.standard,
            version=args.version,
            phases=phases,
            sign_as=args.name if args.sign else None,
            settle_timeout_s=args.settle_timeout,
        )
    operator.end_line()
    verdict = f": {view.verdict}" if view.verdict else ""
    print(f"{view.record.certificate_number} recorded{verdict}")
    return 0


class _Terminal:
    """The operator at a terminal; answers from stdin (a pipe works as well as a person)."""

    def __init__(self, *, yes: bool) -> None:
        self._yes = yes
        self._tty = sys.stdout.isatty()
        self._shown: bool | None = None
        self._open_line = False

    async def ask(self, question: str) -> str:
        from .client.calibration_run import RunAborted

        self.end_line()
        print(question, end="" if not self._yes else "\n", flush=True)
        if self._yes:
            return ""
        line: str = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            raise RunAborted("no answer (end of input): the run stops here, its draft is kept")
        self._shown = None
        return line.rstrip("\n")

    def live(self, value: float, unit: str, stable: bool, detail: str) -> None:
        mark = "stable" if stable else "settling"
        text = f"  live {value:g} {unit}  [{mark}]" + (f"  {detail}" if detail else "")
        if self._tty:
            print("\r" + text.ljust(60), end="", flush=True)
            self._open_line = True
        elif stable != self._shown:
            # A log or pipe gets a line per change, not one per sample.
            print(text, flush=True)
        self._shown = stable

    def say(self, text: str) -> None:
        self.end_line()
        print(text, flush=True)

    def end_line(self) -> None:
        if self._open_line:
            print(flush=True)
            self._open_line = False


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


_ACTIONS = {
    "list": _list,
    "show": _show,
    "sign": _sign,
    "approve": _approve,
    "correct": _correct,
    "withdraw": _withdraw,
    "pdf": _pdf,
    "due": _due,
    "register": _register,
    "run": _run,
}
