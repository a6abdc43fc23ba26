"""`kmz`: one command for hub, agent, simulator, demo and the clients. Only this module prints.

Imports are lazy: `kmz agent` on a Pi never loads the hub's stack, and
`import kleinmaelzung.cli` loads nothing but the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from . import __version__, cli_data, cli_fleet, cli_metadata
from .logformat import FORMATS, configure_logging

EXIT_OK, EXIT_ERROR_REPLY, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_FAILED = 1  # a server command (agent, demo) could not start or run on


#: A command line that parsed but makes no sense; exits 2 (one class for `cli_data` too).
_UsageError = cli_data.UsageError


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _hub_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hub",
        metavar="URL",
        default=None,
        help="hub URL (default: $KMZ_HUB, else the local demo hub http://127.0.0.1:8765)",
    )
    parser.add_argument(
        "--ca",
        metavar="FILE",
        default=None,
        help="for an https:// hub: trust only certificates this CA (PEM) signed "
        "(default: $KMZ_CA, else the system's CAs)",
    )
    parser.add_argument(
        "--pin",
        metavar="SHA256",
        default=None,
        help="for an https:// hub: accept only the certificate with this SHA-256 fingerprint "
        "(openssl x509 -noout -fingerprint -sha256; default: $KMZ_PIN)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kmz", description="Kleinmaelzung: connect lab instruments to the people who use them."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=os.environ.get("KMZ_LOG_FORMAT", "text"),
        help="text lines (default), or one JSON object per line for log shippers "
        "(default: $KMZ_LOG_FORMAT, else text)",
    )
    parser.add_argument("--version", action="version", version=f"kmz {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    hub = commands.add_parser(
        "hub",
        help="run the hub",
        description="Run the hub. Settings come from --config FILE, then KMZ_HUB_* environment "
        "variables, then these flags (kmz hub --example-config shows every setting).",
    )
    hub.add_argument("--config", type=Path, metavar="FILE", help="a TOML config file")
    hub.add_argument(
        "--example-config",
        action="store_true",
        help="print a commented config with every setting and its default, and exit",
    )
    hub.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    hub.add_argument("--port", type=int, default=None, help="port (default 8765)")
    hub.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for the traffic log (default kmz-data, in the current folder)",
    )
    hub.add_argument(
        "--log",
        metavar="URL",
        help="traffic log: sqlite:///path/to/file.sqlite3 or postgresql://user@host/database"
        " (extra kleinmaelzung[postgres]; ?schema=NAME picks a schema);"
        " default: SQLite in the --data folder",
    )
    hub.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="serve a non-loopback address without authentication (anyone who reaches the "
        "hub may drive every instrument); refused without this flag",
    )
    hub.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="serve https:// and wss:// with this certificate (PEM, chain after it); "
        "needs --tls-key",
    )
    hub.add_argument(
        "--tls-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="the certificate's unencrypted private key (PEM)",
    )
    hub.add_argument(
        "--allow-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="let web pages from ORIGIN (https://dash.lab.example) use the hub; repeatable",
    )

    agent = commands.add_parser(
        "agent",
        help="run an agent from its config file",
        description="Run an agent; or check its instruments, or print an example config.",
    )
    agent.add_argument("config", type=Path, nargs="?", metavar="CONFIG.toml")
    agent.add_argument(
        "--check",
        action="store_true",
        help="open and read each instrument once, print a table, and exit (no hub needed); "
        "exit status 1 if any instrument failed",
    )
    agent.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="with --check: how long each instrument may take (default 5)",
    )
    agent.add_argument(
        "--example",
        nargs="?",
        const="",
        default=None,
        metavar="DRIVER",
        help="print a commented example config (one instrument of DRIVER, or one per driver)",
    )

    sim = commands.add_parser("sim", help="simulated instruments on pseudo-terminals")
    sim.add_argument("instruments", nargs="*", metavar="INSTRUMENT", help="default: the demo lab")
    sim.add_argument("--seed", type=int, default=None, help="make the noise repeatable")
    sim.add_argument("--paths-file", default=None, help="write {instrument: tty path} JSON here")

    demo = commands.add_parser("demo", help="run hub, simulated malting lab and agent together")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    demo.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for the traffic log (default $KMZ_DATA, else kmz-data in the current folder)",
    )

    instruments = commands.add_parser("instruments", help="list instruments and their state")
    instruments.add_argument("--json", action="store_true", help="print JSON")
    _hub_option(instruments)

    agents = commands.add_parser(
        "agents", help="list every agent seen: state, host, configuration, spool, clock"
    )
    agents.add_argument("--json", action="store_true", help="print JSON")
    _hub_option(agents)
    from .cli_fleet import add_agent_config_commands  # the standard library only

    add_agent_config_commands(commands, _hub_option)
    from .cli_metadata import add_instrument_meta_commands  # the standard library only

    add_instrument_meta_commands(commands, _hub_option)

    watch = commands.add_parser("watch", help="print live readings")
    watch.add_argument("patterns", nargs="+", metavar="INSTRUMENT_OR_PATTERN")
    watch.add_argument("--count", type=_positive_int, default=None, help="stop after N readings")
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    _hub_option(watch)

    send = commands.add_parser("send", help="send a command to an instrument")
    send.add_argument("instrument")
    send.add_argument("name", metavar="COMMAND")
    send.add_argument("args", nargs="*", metavar="KEY=VALUE", help="values are JSON if they parse")
    send.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    send.add_argument(
        "--key",
        default=None,
        help="idempotency key: sent again with the same key, the command runs at most once",
    )
    send.add_argument("--json", action="store_true", help="print the reply as JSON")
    _hub_option(send)

    # kmz log, history, export: getting data out (`cli_data`).
    cli_data.add_log_parser(commands, _hub_option, _positive_int)
    cli_data.add_history_parser(commands, _hub_option, _positive_int)
    cli_data.add_export_parser(commands, _hub_option)
    cli_data.add_replay_parser(commands, _hub_option)

    forget = commands.add_parser(
        "forget", help="stop listing an instrument whose agent is gone (the log keeps its traffic)"
    )
    forget.add_argument("instrument")
    _hub_option(forget)

    _credential_commands(commands)
    from .cli_calibration import add_calibration_commands  # the standard library only

    add_calibration_commands(commands)

    ports = commands.add_parser(
        "ports", help="list serial ports with their stable by-id paths and USB ids"
    )
    ports.add_argument("--json", action="store_true", help="print a JSON array")
    return parser


def _data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="the hub's data folder, where its credentials are "
        "(default $KMZ_DATA, else kmz-data in the current folder)",
    )


def _credential_commands(commands: Any) -> None:
    """`kmz user ...` and `kmz token ...`: they edit the hub's credentials store on its machine."""
    user = commands.add_parser("user", help="people and scripts who may use the hub")
    users = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = users.add_parser("add", help="add a user with a role and a grant")
    add.add_argument("name")
    set_ = users.add_parser("set", help="change a user's role or grant (open connections too)")
    set_.add_argument("name")
    for parser, required in ((add, True), (set_, False)):
        parser.add_argument(
            "--role", choices=["viewer", "operator", "admin"], required=required, default=None
        )
        parser.add_argument(
            "--instruments",
            nargs="+",
            default=None,
            metavar="PATTERN",
            help="instrument ids or patterns (kiln-*) the user may watch and drive (default *)",
        )
        parser.add_argument(
            "--commands",
            nargs="+",
            default=None,
            metavar="NAME",
            help="command names an operator may run (default *: all)",
        )
        _data_option(parser)
    listing = users.add_parser("list", help="list users")
    _data_option(listing)
    for action, words in (
        ("disable", "disable a user: their tokens stop within 1 s"),
        ("enable", "enable a disabled user again"),
    ):
        parser = users.add_parser(action, help=words)
        parser.add_argument("name")
        _data_option(parser)

    token = commands.add_parser("token", help="tokens for users and agents")
    tokens = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = tokens.add_parser("create", help="make a token (shown once)")
    owner = create.add_mutually_exclusive_group(required=True)
    owner.add_argument("--user", help="a token for this user")
    owner.add_argument("--agent", metavar="AGENT_ID", help="an agent token for this agent id")
    create.add_argument(
        "--instruments",
        nargs="+",
        default=None,
        metavar="PATTERN",
        help="with --agent: the instrument ids (or patterns) the agent may announce",
    )
    create.add_argument(
        "--expires", default=None, metavar="AGE", help="e.g. 90d, 12h (default never)"
    )
    create.add_argument("--label", default="", help="a note shown by kmz token list")
    create.add_argument(
        "--save",
        metavar="HUB_URL",
        default=None,
        help="also keep it in your tokens file for this hub, for kmz on this machine",
    )
    _data_option(create)
    listing = tokens.add_parser("list", help="list tokens (never their secrets)")
    _data_option(listing)
    revoke = tokens.add_parser("revoke", help="revoke a token: its connections end within 1 s")
    revoke.add_argument("id", metavar="TOKEN_ID")
    _data_option(revoke)


def main(argv: list[str] | None = None) -> int:
    """Run `kmz`; return the exit status."""
    args = _parser().parse_args(argv)
    configure_logging(args.verbose, args.log_format)
    os.environ["KMZ_LOG_FORMAT"] = args.log_format  # for the processes it starts
    command = args.command.replace("-", "_")
    handler: Callable[[argparse.Namespace], int] = globals()[f"_cmd_{command}"]
    try:
        return handler(args)
    except _UsageError as exc:
        print(f"kmz {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


# --- servers -------------------------------------------------------------------


def _cmd_hub(args: argparse.Namespace) -> int:
    from .configfile import ConfigFileError
    from .hub import HubStartError, serve_hub
    from .hub.config import example_config, load_hub_config

    if args.example_config:
        print(example_config(), end="")
        return EXIT_OK
    flags = {
        "host": args.host,
        "port": args.port,
        "data_dir": args.data,
        "log_url": args.log,
        "insecure": args.insecure,
        "allowed_origins": tuple(args.allow_origin) if args.allow_origin else None,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
    }
    try:
        config = load_hub_config(
            args.config, overrides={k: v for k, v in flags.items() if v is not None}
        )
    except ConfigFileError as exc:
        print(f"kmz hub: {exc}", file=sys.stderr)
        return EXIT_USAGE
    shown = _log_shown(config)
    try:
        serve_hub(
            config,
            # With JSON logs every line is an event (`hub started` names the URL).
            on_ready=None
            if args.log_format == "json"
            else lambda url: print(
                f"kmz hub on {url}  (log in {shown}); Ctrl-C stops it", flush=True
            ),
        )
    except HubStartError as exc:
        print(f"kmz hub: {exc}", file=sys.stderr)
        return EXIT_ERROR_REPLY
    return EXIT_OK


def _log_shown(config: Any) -> str:
    """Where the hub's traffic log is, without a password."""
    from .hub.store import redact_url

    return redact_url(config.log_url) if config.log_url else str(config.data_dir)


def _cmd_agent(args: argparse.Namespace) -> int:
    from .agent import AgentError, ConfigError, MissingExtra, load_config, run_agent

    if args.example is not None:
        if args.config is not None or args.check:
            raise _UsageError("--example takes no config and no --check")
        return _print_example(args.example or None)
    if args.config is None:
        raise _UsageError("a config file is needed (kmz agent --example prints one to start from)")
    if args.timeout <= 0:
        raise _UsageError(f"--timeout must be more than 0 seconds, got {args.timeout:g}")
    try:
        # Checking the config loads the drivers it names, and only those: a
        # missing extra is then the one thing to tell, with its install line.
        config = load_config(args.config)
    except MissingExtra as exc:
        print(f"kmz agent {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ConfigError as exc:
        print(f"kmz agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.check:
        from .agent.check import check_instruments, format_table

        results = asyncio.run(check_instruments(config, timeout_s=args.timeout))
        print(format_table(results))
        failed = [r.instrument for r in results if not r.ok]
        if failed:
            print(f"{len(failed)} of {len(results)} instruments failed: {', '.join(failed)}")
            return EXIT_FAILED
        print(f"all {len(results)} instruments answered")
        return EXIT_OK

    async def run() -> None:
        import signal

        # SIGTERM (systemd) and Ctrl-C both end the agent cleanly, every sample spooled.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_agent(config, stop=stop)

    try:
        asyncio.run(run())
    except AgentError as exc:
        print(f"kmz agent: stopped: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    # The last column is free text: it is not padded, so it may run long.
    last = len(rows[0]) - 1
    widths = [max(len(row[column]) for row in rows) for column in range(last)]
    for row in rows:
        padded = [cell.ljust(width) for cell, width in zip(row[:last], widths, strict=True)]
        print(*padded, row[last], sep="  ")


def _print_example(driver: str | None) -> int:
    from .agent.examples import example_config

    try:
        print(example_config(driver), end="")
    except KeyError as exc:
        raise _UsageError(exc.args[0]) from None
    return EXIT_OK


def _cmd_ports(args: argparse.Namespace) -> int:
    import json

    from .agent.ports import list_serial_ports

    try:
        ports = list_serial_ports()
    except ModuleNotFoundError as exc:
        print(
            f"kmz ports: needs pyserial (missing module {exc.name}): "
            "pip install 'kleinmaelzung[agent]'",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if args.json:
        print(json.dumps([port.to_json() for port in ports], indent=2))
        return EXIT_OK
    if not ports:
        print("no serial ports found")
        return EXIT_OK
    rows = [("DEVICE", "BY-ID", "USB VID:PID:SERIAL", "DESCRIPTION", "IN THE CONFIG")]
    rows += [
        (p.device, p.by_id or "-", p.usb or "-", p.description or "-", p.config_line) for p in ports
    ]
    _print_table(rows)
    return EXIT_OK


def _cmd_sim(args: argparse.Namespace) -> int:
    from .sim import DEMO_INSTRUMENTS, run_simulator

    def ready(paths: dict[str, str]) -> None:
        print("simulated instruments (Ctrl-C stops them):")
        for instrument, path in paths.items():
            print(f"  {instrument:<14} {path}")
        sys.stdout.flush()

    run_simulator(
        args.instruments or DEMO_INSTRUMENTS,
        seed=args.seed,
        paths_file=args.paths_file,
        on_ready=ready,
    )
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    def say(text: str) -> None:
        print(text, flush=True)

    def complain(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    return run_demo(host=args.host, port=args.port, data_dir=args.data, say=say, complain=complain)


# --- clients -------------------------------------------------------------------


def _hub_url(args: argparse.Namespace) -> str:
    from .transport import base_url, default_hub_url

    url = str(args.hub or default_hub_url())
    try:
        return base_url(url)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


def _trust(args: argparse.Namespace) -> dict[str, Any]:
    """A client's `ca_file` and `pin_sha256` from --ca/--pin (the client falls back to
    $KMZ_CA and $KMZ_PIN)."""
    return {"ca_file": args.ca, "pin_sha256": args.pin}


def _token(url: str) -> str | None:
    from .client.credentials import token_for

    return token_for(url)


def _run_client(name: str, coroutine: Coroutine[Any, Any, int]) -> int:
    """Run a client command, turning the client's exceptions into messages and exit codes."""
    from .client import (
        CommandError,
        ConnectionLost,
        HandshakeError,
        HubUnreachable,
        KmzError,
        RequestError,
        RequestTimeout,
    )

    try:
        return asyncio.run(coroutine)
    except HubUnreachable as exc:
        print(
            f"kmz {name}: {exc}\nIs the hub running? `kmz demo` starts a local one; "
            "--hub or $KMZ_HUB choose another.",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    except (HandshakeError, ConnectionLost) as exc:
        print(f"kmz {name}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (CommandError, RequestError) as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return EXIT_ERROR_REPLY
    except RequestTimeout as exc:
        print(f"error [timeout]: {exc}", file=sys.stderr)
        return EXIT_ERROR_REPLY
    except KmzError as exc:
        print(f"kmz {name}: {exc}", file=sys.stderr)
        return EXIT_ERROR_REPLY


def _cmd_instruments(args: argparse.Namespace) -> int:
    import time

    import msgspec

    from .client import Client
    from .client.formatting import format_instruments

    url = _hub_url(args)

    async def run() -> int:
        async with Client(url, name="kmz-instruments", token=_token(url), **_trust(args)) as client:
            records = await client.instruments()
        if args.json:
            print(msgspec.json.format(msgspec.json.encode(records)).decode())
        else:
            print(format_instruments(records, time.time()))
        return EXIT_OK

    return _run_client("instruments", run())


def _cmd_agents(args: argparse.Namespace) -> int:
    import time

    import msgspec

    from .client import fetch_agents
    from .client.formatting import format_agents

    url = _hub_url(args)

    async def run() -> int:
        records = await fetch_agents(url, token=_token(url), **_trust(args))
        if args.json:
            print(msgspec.json.format(msgspec.json.encode(records)).decode())
        else:
            print(format_agents(records, time.time()))
        return EXIT_OK

    return _run_client("agents", run())


def _cmd_watch(args: argparse.Namespace) -> int:
    from .client import Client, Sample
    from .client.formatting import (
        format_gap,
        format_missed,
        format_sample,
        format_status,
        sample_json,
        units_of,
    )
    from .protocol import Gap, Missed, is_pattern, matching

    bad = [p for p in args.patterns if not is_pattern(p)]
    if bad:
        raise _UsageError(f"not an instrument id or pattern: {' '.join(bad)}")
    url = _hub_url(args)
    status_out = sys.stderr if args.json else sys.stdout  # stdout stays pure samples

    async def run() -> int:
        # Reconnects by itself: a watch outlives a hub restart.
        async with Client(
            url, name="kmz-watch", reconnect=True, token=_token(url), **_trust(args)
        ) as client:
            records = await client.instruments()
            units = units_of(records)
            for pattern in args.patterns:
                if not matching(pattern, [r.id for r in records]):
                    print(
                        f"kmz watch: no instrument matches {pattern!r} now; waiting for one",
                        file=sys.stderr,
                        flush=True,
                    )
            seen = 0
            async for event in client.subscribe(*args.patterns, status=True):
                if isinstance(event, Gap):
                    print(format_gap(event), file=status_out, flush=True)
                    continue
                if isinstance(event, Missed):
                    print(format_missed(event), file=status_out, flush=True)
                    continue
                if not isinstance(event, Sample):
                    print(format_status(event), file=status_out, flush=True)
                    continue
                if args.json:
                    print(sample_json(event), flush=True)
                else:
                    if event.instrument not in units:  # appeared after we started
                        units.update(units_of(await client.instruments()))
                        units.setdefault(event.instrument, {})
                    print(format_sample(event, units), flush=True)
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
        return EXIT_OK

    return _run_client("watch", run())


def _cmd_send(args: argparse.Namespace) -> int:
    import msgspec

    from .client import Client, CommandError
    from .client.formatting import format_result, parse_assignment
    from .protocol import NAME_RULE, Timeouts, is_instrument_id, is_name

    if not is_instrument_id(args.instrument):
        raise _UsageError(f"not an instrument id: {args.instrument!r}")
    if not is_name(args.name):
        # Checked here, not at the hub: the hub's answer names a JSON path the
        # user never typed.
        guess = _name_like(args.name)
        hint = f" (did you mean {guess}?)" if guess else ""
        raise _UsageError(f"command name {args.name!r} is not valid: a name is {NAME_RULE}{hint}")
    if not 0 < args.timeout <= Timeouts().command_max_s:
        raise _UsageError(f"--timeout must be more than 0 and at most {Timeouts().command_max_s:g}")
    try:
        kwargs = dict(parse_assignment(a) for a in args.args)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    url = _hub_url(args)

    async def run() -> int:
        async with Client(url, name="kmz-send", token=_token(url), **_trust(args)) as client:
            try:
                result = await client.command(
                    args.instrument,
                    args.name,
                    timeout_s=args.timeout,
                    idempotency_key=args.key,
                    **kwargs,
                )
            except CommandError as exc:
                if args.json:
                    error = {"code": exc.code, "message": exc.message}
                    print(msgspec.json.encode({"ok": False, "error": error}).decode())
                print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
                return EXIT_ERROR_REPLY
        if args.json:
            print(msgspec.json.encode({"ok": True, "result": result}).decode())
        else:
            print(format_result(result))
        return EXIT_OK

    return _run_client("send", run())


def _name_like(text: str) -> str | None:
    """A valid command name close to `text` (`set-setpoint` -> `set_setpoint`), if any."""
    import re

    from .protocol import is_name

    guess = re.sub(r"[^a-z0-9_]+", "_", text.strip().lower()).strip("_")
    return guess if guess != text and is_name(guess) else None


_cmd_log = cli_data.cmd_log
_cmd_history = cli_data.cmd_history
_cmd_export = cli_data.cmd_export
_cmd_replay = cli_data.cmd_replay
_cmd_agent_config = cli_fleet.cmd_agent_config
_cmd_instrument_meta = cli_metadata.cmd_instrument_meta


def _cmd_forget(args: argparse.Namespace) -> int:
    from .client import forget_instrument
    from .protocol import is_instrument_id

    if not is_instrument_id(args.instrument):
        raise _UsageError(f"not an instrument id: {args.instrument!r}")
    url = _hub_url(args)

    async def run() -> int:
        await forget_instrument(url, args.instrument, token=_token(url), **_trust(args))
        print(f"forgot {args.instrument}")
        return EXIT_OK

    return _run_client("forget", run())


def _cmd_calibration(args: argparse.Namespace) -> int:
    from .cli_calibration import run_calibration_command

    return run_calibration_command(args)


# --- credentials ---------------------------------------------------------------


def _credentials(args: argparse.Namespace) -> Any:
    import os

    from .hub.auth import SqliteCredentials

    data = args.data or Path(os.environ.get("KMZ_DATA", "kmz-data"))
    return SqliteCredentials(data)


def _cmd_user(args: argparse.Namespace) -> int:
    import time

    from .hub.auth import CredentialsError, Role

    store = _credentials(args)
    first = not store.exists()
    try:
        if args.action == "add":
            user = store.add_user(
                args.name,
                Role(args.role),
                tuple(args.instruments or ("*",)),
                tuple(args.commands or ("*",)),
            )
            print(f"added {user.name} ({user.role}) in {store.path}")
            if first:
                print(
                    "this hub now requires tokens: restart it if it runs "
                    f"(kmz token create --user {user.name} makes one)",
                    file=sys.stderr,
                )
        elif args.action == "set":
            user = store.set_user(
                args.name,
                role=Role(args.role) if args.role else None,
                instruments=tuple(args.instruments) if args.instruments else None,
                commands=tuple(args.commands) if args.commands else None,
            )
            print(
                f"{user.name}: {user.role}, instruments {' '.join(user.instruments)}, "
                f"commands {' '.join(user.commands)}"
            )
        elif args.action in ("disable", "enable"):
            store.set_user(args.name, enabled=args.action == "enable")
            print(f"{args.action}d {args.name}")
        else:
            rows = [("USER", "ROLE", "INSTRUMENTS", "COMMANDS", "STATE")]
            for user in store.users():
                state = (
                    "active"
                    if user.disabled is None
                    else "disabled " + time.strftime("%Y-%m-%d", time.localtime(user.disabled))
                )
                rows.append(
                    (
                        user.name,
                        user.role,
                        " ".join(user.instruments),
                        " ".join(user.commands),
                        state,
                    )
                )
            _print_table(rows)
    except CredentialsError as exc:
        print(f"kmz user {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _cmd_token(args: argparse.Namespace) -> int:
    import time

    from .hub.auth import CredentialsError

    store = _credentials(args)
    try:
        if args.action == "create":
            expires = None
            if args.expires is not None:
                expires = time.time() + _age_s(args.expires)
            if args.agent is None and args.instruments:
                raise _UsageError("--instruments goes with --agent; a user's grant is kmz user set")
            record, plaintext = store.create_token(
                user=args.user,
                agent=args.agent,
                instruments=tuple(args.instruments or ()),
                expires=expires,
                label=args.label,
            )
            print(plaintext)
            print(
                f"token {record.id} for {record.owner}: shown once, keep it safe", file=sys.stderr
            )
            if args.save:
                from .client.credentials import save_token

                path = save_token(_checked_url(args.save), plaintext)
                print(f"saved for {args.save} in {path}", file=sys.stderr)
        elif args.action == "revoke":
            record = store.revoke_token(args.id)
            print(f"revoked {record.id} ({record.owner})")
        else:
            rows = [("ID", "FOR", "CREATED", "EXPIRES", "STATE", "LABEL")]
            now = time.time()
            for token in store.tokens():
                state = (
                    "revoked"
                    if token.revoked is not None
                    else "expired"
                    if token.expires is not None and token.expires <= now
                    else "valid"
                )
                rows.append(
                    (
                        token.id,
                        token.owner,
                        _day(token.created),
                        _day(token.expires) if token.expires else "never",
                        state,
                        token.label,
                    )
                )
            _print_table(rows)
    except CredentialsError as exc:
        print(f"kmz token {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _checked_url(url: str) -> str:
    from .transport import base_url

    try:
        return base_url(url)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


def _age_s(text: str) -> float:
    """Seconds of an age such as 90d, 12h, 30m, 45s."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise _UsageError(f"--expires takes an age such as 90d, 12h or 30m, got {text!r}")
    return int(number) * units[unit]


def _day(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


if __name__ == "__main__":
    raise SystemExit(main())
