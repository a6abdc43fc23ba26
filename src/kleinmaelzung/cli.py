"""`kmz`: one command for hub, agent, simulator, demo and the clients. Only this module prints.

Imports are lazy: `kmz agent` on a Pi never loads the hub's stack, and
`kmz --help` loads nothing but argparse.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR_REPLY, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _hub_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hub",
        metavar="URL",
        default=None,
        help="hub URL (default: $KMZ_HUB, else the local demo hub http://127.0.0.1:8765)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kmz", description="Kleinmaelzung: connect lab instruments to the people who use them."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    hub = commands.add_parser("hub", help="run the hub")
    hub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    hub.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    hub.add_argument("--data", type=Path, default=Path("kmz-data"), help="data directory")

    agent = commands.add_parser("agent", help="run an agent from its config file")
    agent.add_argument("config", type=Path, metavar="CONFIG.toml")

    sim = commands.add_parser("sim", help="simulated instruments on pseudo-terminals")
    sim.add_argument("instruments", nargs="*", metavar="INSTRUMENT", help="default: the demo lab")
    sim.add_argument("--seed", type=int, default=None, help="make the noise repeatable")
    sim.add_argument("--paths-file", default=None, help="write {instrument: tty path} JSON here")

    demo = commands.add_parser("demo", help="run hub, simulated malting lab and agent together")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8765)
    demo.add_argument("--data", type=Path, default=None, help="data directory (default kmz-data)")

    instruments = commands.add_parser("instruments", help="list instruments and their state")
    instruments.add_argument("--json", action="store_true", help="print JSON")
    _hub_option(instruments)

    watch = commands.add_parser("watch", help="print live readings")
    watch.add_argument("patterns", nargs="+", metavar="INSTRUMENT_OR_PATTERN")
    watch.add_argument("--count", type=int, default=None, help="stop after N readings")
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    _hub_option(watch)

    send = commands.add_parser("send", help="send a command to an instrument")
    send.add_argument("instrument")
    send.add_argument("name", metavar="COMMAND")
    send.add_argument("args", nargs="*", metavar="KEY=VALUE")
    send.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    send.add_argument("--json", action="store_true", help="print the reply as JSON")
    _hub_option(send)

    log = commands.add_parser("log", help="print the newest traffic-log entries")
    log.add_argument("--instrument", default=None)
    log.add_argument("--limit", type=int, default=20)
    log.add_argument("--json", action="store_true", help="print a JSON array")
    _hub_option(log)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `kmz`; return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command not in ("hub", "agent", "demo") and not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    handler = globals()[f"_cmd_{args.command}"]
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _cmd_hub(args: argparse.Namespace) -> int:
    from .hub import serve_hub

    print(
        f"kmz hub on http://{args.host}:{args.port}  (data in {args.data}); Ctrl-C stops it",
        flush=True,
    )
    serve_hub(host=args.host, port=args.port, data_dir=args.data)
    return EXIT_OK


def _cmd_agent(args: argparse.Namespace) -> int:
    from .agent import ConfigError, load_config, run_agent

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"kmz agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    asyncio.run(_until_signal(lambda stop: run_agent(config, stop=stop)))
    return EXIT_OK


async def _until_signal(start: Any) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await start(stop)


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


def _hub_url(args: argparse.Namespace) -> str:
    from .transport import default_hub_url

    return str(args.hub or default_hub_url())


def _client_command(coroutine: Any, url: str) -> int:
    """Run a client coroutine, turning connection failures into a clear message."""
    from .client import HandshakeError, HubUnreachable

    try:
        return int(asyncio.run(coroutine))
    except HubUnreachable as exc:
        print(
            f"kmz: {exc}\nIs the hub running? `kmz demo` starts a local one; "
            "--hub or $KMZ_HUB choose another.",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    except HandshakeError as exc:
        print(f"kmz: the hub at {url} refused the connection: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


def _cmd_instruments(args: argparse.Namespace) -> int:
    import time

    import msgspec

    from .client import Client
    from .client.formatting import format_instruments

    url = _hub_url(args)

    async def run() -> int:
        async with Client(url, name="kmz-instruments") as client:
            records = await client.instruments()
        if args.json:
            print(msgspec.json.format(msgspec.json.encode(records)).decode())
        else:
            print(format_instruments(records, time.time()))
        return EXIT_OK

    return _client_command(run(), url)


def _cmd_watch(args: argparse.Namespace) -> int:
    from .client import Client, ConnectionLost, Sample
    from .client.formatting import format_sample, format_status, sample_json, units_of

    url = _hub_url(args)

    async def run() -> int:
        async with Client(url, name="kmz-watch", reconnect=True) as client:
            units = units_of(await client.instruments())
            subscription = await client.subscribe(*args.patterns, status=True)
            if not subscription.instruments:
                print(
                    f"kmz watch: no instrument matches {' '.join(args.patterns)} yet; "
                    "waiting for one to appear",
                    file=sys.stderr,
                )
            seen = 0
            try:
                async for event in subscription:
                    if isinstance(event, Sample):
                        print(
                            sample_json(event) if args.json else format_sample(event, units),
                            flush=True,
                        )
                        seen += 1
                        if args.count is not None and seen >= args.count:
                            break
                    else:
                        print(
                            format_status(event),
                            file=sys.stderr if args.json else sys.stdout,
                            flush=True,
                        )
            except ConnectionLost as exc:
                print(f"kmz watch: {exc}", file=sys.stderr)
                return EXIT_UNREACHABLE
        return EXIT_OK

    return _client_command(run(), url)


def _cmd_send(args: argparse.Namespace) -> int:
    import msgspec

    from .client import Client, CommandError
    from .client.formatting import format_result, parse_assignment

    url = _hub_url(args)
    try:
        kwargs = dict(parse_assignment(a) for a in args.args)
    except ValueError as exc:
        print(f"kmz send: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def run() -> int:
        async with Client(url, name="kmz-send") as client:
            try:
                result = await client.command(
                    args.instrument, args.name, timeout_s=args.timeout, **kwargs
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

    return _client_command(run(), url)


def _cmd_log(args: argparse.Namespace) -> int:
    import msgspec

    from .client import RequestError, fetch_log
    from .client.formatting import format_log_entry

    url = _hub_url(args)

    async def run() -> int:
        try:
            entries = await fetch_log(url, instrument=args.instrument, limit=args.limit)
        except RequestError as exc:
            print(f"kmz log: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if args.json:
            print(msgspec.json.encode(entries).decode())
        else:
            for entry in reversed(entries):  # oldest first, like a log file
                print(format_log_entry(entry))
        return EXIT_OK

    return _client_command(run(), url)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
