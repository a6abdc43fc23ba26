"""The kmz command as a user runs it: help, usage errors, an unreachable hub."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

SUBCOMMANDS = ["hub", "agent", "sim", "demo", "instruments", "watch", "send", "log"]


def kmz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kleinmaelzung.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str) -> None:
    result = kmz(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: kmz {command}")


def test_no_subcommand_is_a_usage_error() -> None:
    result = kmz()
    assert result.returncode == 2
    assert "COMMAND" in result.stderr


def test_unreachable_hub_exits_3_and_says_where_it_looked() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = kmz("send", "balance", "tare", "--hub", f"http://127.0.0.1:{port}")
    assert result.returncode == 3
    assert f"127.0.0.1:{port}" in result.stderr
    assert "kmz demo" in result.stderr


def test_bad_key_value_is_a_usage_error() -> None:
    result = kmz("send", "kiln-air", "set_setpoint", "80", "--hub", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert "expected KEY=VALUE, got '80'" in result.stderr


def test_agent_config_error_exits_2_naming_the_file(tmp_path: object) -> None:
    result = kmz("agent", "/nonexistent/agent.toml")
    assert result.returncode == 2
    assert "/nonexistent/agent.toml: cannot read the file" in result.stderr
