"""The kmz command as a user runs it: a subprocess against a real hub fed by a raw agent."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from kleinmaelzung.hub import RunningHub

from .client.agent_peer import (
    RawPeer,
    answer_commands,
    instrument,
    publish,
    publish_until,
    raw_agent,
)

SUBCOMMANDS = [
    "hub",
    "agent",
    "sim",
    "demo",
    "instruments",
    "watch",
    "send",
    "log",
    "forget",
    "ports",
]
KMZ = [sys.executable, "-m", "kleinmaelzung.cli"]
DEADLINE_S = 30.0
#: kmz as a user runs it: without the asyncio debug mode scripts/test sets for
#: the tests' own loops, whose slow-callback warnings (on a loaded machine)
#: would land in the stderr these tests compare.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}


def kmz(*args: str) -> subprocess.CompletedProcess[str]:
    """Run kmz to completion; only for commands that need no hub in this event loop."""
    return subprocess.run(
        [*KMZ, *args], capture_output=True, text=True, timeout=DEADLINE_S, check=False, env=ENV
    )


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


async def kmz_async(*args: str) -> Result:
    """Run kmz without blocking the event loop the hub fixture serves on."""
    process = await asyncio.create_subprocess_exec(
        *KMZ, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), DEADLINE_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def unused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@asynccontextmanager
async def lab(hub: RunningHub) -> AsyncIterator[RawPeer]:
    """A raw agent with a balance (tare works, zero fails) and a kiln."""
    instruments = [instrument("balance", ("tare", "zero")), instrument("kiln-air")]
    async with raw_agent(hub.url, "pi", instruments) as agent:
        player = asyncio.create_task(answer_commands(agent))
        try:
            yield agent
        finally:
            player.cancel()


# --- without a hub ---------------------------------------------------------------


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str) -> None:
    result = kmz(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: kmz {command}")


def test_version() -> None:
    from kleinmaelzung import __version__

    result = kmz("--version")
    assert (result.returncode, result.stdout) == (0, f"kmz {__version__}\n")


@pytest.mark.parametrize("command", ["hub", "demo"])
def test_help_shows_the_default_data_folder(command: str) -> None:
    result = kmz(command, "--help")
    assert result.returncode == 0
    assert "kmz-data" in " ".join(result.stdout.split())  # argparse may wrap the line


def test_git_ignores_the_default_data_folder() -> None:
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "-C", str(root), "check-ignore", "-q", "kmz-data/traffic.sqlite3"],
        timeout=DEADLINE_S,
        check=False,
    )
    assert result.returncode == 0, "kmz-data/ (the default data folder) is not in .gitignore"


def test_no_subcommand_is_a_usage_error() -> None:
    result = kmz()
    assert result.returncode == 2
    assert "COMMAND" in result.stderr


def test_importing_the_cli_loads_no_web_stack() -> None:
    code = "import kleinmaelzung.cli, sys; assert 'aiohttp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=DEADLINE_S)


@pytest.mark.parametrize(
    "args",
    [("send", "balance", "tare"), ("instruments",), ("watch", "kiln-*"), ("log",)],
)
def test_unreachable_hub_exits_3_and_says_where_it_looked(args: tuple[str, ...]) -> None:
    url = unused_url()
    result = kmz(*args, "--hub", url)
    assert result.returncode == 3
    assert url.removeprefix("http://") in result.stderr
    assert "kmz demo" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("send", "kiln-air", "set_setpoint", "80"), "expected KEY=VALUE, got '80'"),
        (("send", "Kiln", "tare"), "not an instrument id: 'Kiln'"),
        (
            ("send", "kiln-air", "set-setpoint", "value=80"),
            "command name 'set-setpoint' is not valid: a name is a lowercase letter followed by"
            " up to 31 lowercase letters, digits or '_' (did you mean set_setpoint?)",
        ),
        (("send", "kiln-air", "Tare"), "command name 'Tare' is not valid: a name is a lowercase"),
        (("send", "kiln-air", "2x"), "command name '2x' is not valid"),
        (("send", "kiln-air", "tare", "--timeout", "0"), "--timeout"),
        (("watch", "Kiln*"), "not an instrument id or pattern: Kiln*"),
        (("watch", "kiln-air", "--count", "0"), "must be at least 1"),
        (("log", "--instrument", "A B"), "not an instrument id"),
        (("instruments", "--hub", "ftp://x"), "hub URL must start with"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    result = kmz(*args, *(() if "--hub" in args else ("--hub", "http://127.0.0.1:9")))
    assert result.returncode == 2
    assert message in result.stderr


def test_agent_config_error_exits_2_naming_the_file() -> None:
    result = kmz("agent", "/nonexistent/agent.toml")
    assert result.returncode == 2
    assert "/nonexistent/agent.toml: cannot read the file" in result.stderr


# --- against a hub ---------------------------------------------------------------


async def test_watch_json_prints_one_sample_per_line(hub: RunningHub) -> None:
    async with lab(hub) as agent:
        watch = asyncio.ensure_future(
            kmz_async("watch", "kiln-*", "--count", "3", "--json", "--hub", hub.url)
        )
        await publish_until(agent, "kiln-air", watch)
        result = watch.result()
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3
    assert all(set(line) == {"instrument", "seq", "ts", "values"} for line in lines)
    assert {line["instrument"] for line in lines} == {"kiln-air"}
    seqs = [line["seq"] for line in lines]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    assert "kiln-air  is online" in result.stderr  # status lines keep off stdout


async def test_watch_shows_values_with_units(hub: RunningHub) -> None:
    async with lab(hub) as agent:
        watch = asyncio.ensure_future(
            kmz_async("watch", "balance", "--count", "2", "--hub", hub.url)
        )
        await publish_until(agent, "balance", watch)
        result = watch.result()
    assert result.returncode == 0, result.stderr
    status, *samples = result.stdout.splitlines()
    assert status.endswith("  balance  is online")  # the state when the watch began
    assert len(samples) == 2
    for line in samples:
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}  balance  mass=\d+\.00 g", line), line


async def test_watch_waits_for_a_pattern_and_ctrl_c_exits_130_quietly(hub: RunningHub) -> None:
    process = await asyncio.create_subprocess_exec(
        *KMZ, "watch", "nothing-*", "--hub", hub.url, stderr=subprocess.PIPE, env=ENV
    )
    try:
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stderr.readline(), DEADLINE_S)
        assert b"no instrument matches 'nothing-*' now" in line
        process.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(process.stderr.read(), DEADLINE_S)
        assert await process.wait() == 130
        assert rest == b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_send_prints_ok_or_the_error(hub: RunningHub) -> None:
    async with lab(hub):
        ok = await kmz_async("send", "balance", "tare", "--hub", hub.url)
        as_json = await kmz_async("send", "balance", "tare", "--json", "--hub", hub.url)
        # The hub checks arguments against the declaration before forwarding.
        refused = await kmz_async("send", "balance", "tare", "force=true", "--hub", hub.url)
        failed = await kmz_async("send", "balance", "zero", "--hub", hub.url)
        unknown = await kmz_async("send", "scale", "tare", "--hub", hub.url)
    assert (ok.returncode, ok.stdout) == (0, "ok  tare=1.50\n")
    assert (as_json.returncode, json.loads(as_json.stdout)) == (
        0,
        {"ok": True, "result": {"tare": 1.5}},
    )
    assert (failed.returncode, failed.stderr) == (1, "error [instrument_error]: not stable\n")
    assert (refused.returncode, refused.stderr) == (
        1,
        "error [invalid_arguments]: tare takes no arguments; unexpected: force\n",
    )
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error [unknown_instrument]: ")


async def test_instruments_as_json_and_as_a_table(hub: RunningHub) -> None:
    async with lab(hub):
        as_json = await kmz_async("instruments", "--json", "--hub", hub.url)
        table = await kmz_async("instruments", "--hub", hub.url)
    assert as_json.returncode == 0, as_json.stderr
    records = json.loads(as_json.stdout)
    assert sorted((r["id"], r["state"], r["agent"]) for r in records) == [
        ("balance", "online", "pi"),
        ("kiln-air", "online", "pi"),
    ]
    header, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["INSTRUMENT", "KIND", "STATE", "AGENT"]
    assert len(rows) == 2 and "mass [g]" in rows[0]


async def test_log_json_shows_the_traffic(hub: RunningHub) -> None:
    async with lab(hub) as agent:
        await publish(agent, "balance", 0)
        await kmz_async("send", "balance", "tare", "--hub", hub.url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:  # the hub commits its log in batches
        result = await kmz_async("log", "--json", "--limit", "50", "--hub", hub.url)
        assert result.returncode == 0, result.stderr
        types = {entry["type"] for entry in json.loads(result.stdout)}
        if {"command", "reply", "data"} <= types or loop.time() > deadline:
            break
    assert {"agent_hello", "command", "reply", "data"} <= types
    human = await kmz_async("log", "--instrument", "balance", "--hub", hub.url)
    assert human.returncode == 0
    assert any(" data " in line and "balance" in line for line in human.stdout.splitlines())


async def test_forget_an_instrument_whose_agent_is_gone(hub: RunningHub) -> None:
    async with lab(hub):
        online = await kmz_async("forget", "balance", "--hub", hub.url)
    assert (online.returncode, online.stderr.split("]")[0]) == (1, "error [instrument_online")
    gone = await kmz_async("forget", "balance", "--hub", hub.url)
    assert (gone.returncode, gone.stdout) == (0, "forgot balance\n")
    again = await kmz_async("forget", "balance", "--hub", hub.url)
    assert (again.returncode, again.stderr.split("]")[0]) == (1, "error [unknown_instrument")
    listed = await kmz_async("instruments", "--json", "--hub", hub.url)
    assert [r["id"] for r in json.loads(listed.stdout)] == ["kiln-air"]


async def test_a_hub_on_a_busy_port_says_so_and_exits(hub: RunningHub, tmp_path: Path) -> None:
    port = hub.url.rsplit(":", 1)[1]
    busy = await kmz_async("hub", "--port", port, "--data", str(tmp_path / "data"))
    assert busy.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in busy.stderr
    assert "Traceback" not in busy.stderr + busy.stdout
    assert "hub started" not in busy.stderr + busy.stdout
