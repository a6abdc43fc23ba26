"""`kmz agent-config get|set|rollback`: an agent's instrument configuration, held at the hub.

Like `cli_data`, this module imports nothing but the standard library until a
command runs, so `kmz agent` on a Pi never loads it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_agent_config_commands(
    commands: Any, hub_option: Any, trust_options: Any | None = None
) -> None:
    """The `agent-config` subcommand and its actions."""
    parser = commands.add_parser(
        "agent-config",
        help="read, set or roll back an agent's instrument configuration (admin)",
        description="An agent's [[instruments]] tables, held at the hub: `get AGENT > lab.toml`, "
        "edit, `set AGENT lab.toml`; `rollback AGENT` runs the revision before again.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    get = actions.add_parser("get", help="print the configuration the agent runs, as TOML")
    get.add_argument("agent", metavar="AGENT")
    get.add_argument(
        "--json", action="store_true", help="print the revision, the TOML and the revisions held"
    )
    set_ = actions.add_parser("set", help="send a TOML file; print what the agent did")
    set_.add_argument("agent", metavar="AGENT")
    set_.add_argument("file", metavar="FILE", help="[[instruments]] tables ('-': standard input)")
    set_.add_argument("--json", action="store_true", help="print the outcome as JSON")
    rollback = actions.add_parser("rollback", help="run the previous revision again")
    rollback.add_argument("agent", metavar="AGENT")
    rollback.add_argument("--json", action="store_true", help="print the outcome as JSON")
    for action in (get, set_, rollback):
        hub_option(action)


def cmd_agent_config(args: argparse.Namespace) -> int:
    """Run `kmz agent-config ACTION`."""
    import msgspec

    from .cli import EXIT_OK, EXIT_USAGE, _hub_url, _run_client, _token, _trust
    from .client import get_agent_config, rollback_agent_config, set_agent_config

    url = _hub_url(args)
    credentials = {"token": _token(url), **_trust(args)}
    if args.action == "set":
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
        except OSError as exc:
            print(
                f"kmz agent-config: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr
            )
            return EXIT_USAGE
        source = "stdin" if args.file == "-" else Path(args.file).name

    async def run() -> int:
        if args.action == "get":
            view = await get_agent_config(url, args.agent, **credentials)
            if args.json:
                print(msgspec.json.format(msgspec.json.encode(view)).decode())
            else:
                print(view.config, end="")
            return EXIT_OK
        if args.action == "set":
            outcome = await set_agent_config(url, args.agent, text, source=source, **credentials)
        else:
            outcome = await rollback_agent_config(url, args.agent, **credentials)
        if args.json:
            print(msgspec.json.format(msgspec.json.encode(outcome)).decode())
            return EXIT_OK
        print(f"agent {outcome.agent} runs revision {outcome.running}")
        for instrument in outcome.instruments:
            reason = f": {instrument.reason}" if instrument.reason else ""
            print(f"  {instrument.id:<24} {instrument.change:<9} {instrument.state}{reason}")
        return EXIT_OK

    return _run_client("agent-config", run())
