"""A command reported as not done never runs later: deadlines with real processes and SIGSTOP.

Issue 7, defect 1: with the agent stopped, `kmz send kiln-air set_setpoint
value=123` was answered as failed, and on SIGCONT the agent ran it from its
dead connection's buffer, 40 s late.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
import pytest

from .conftest import Lab
from .processes import Process, get_json, wait_until

pytestmark = pytest.mark.slow

DEADLINE_S = 20.0


def kmz(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one `kmz` client command against the lab's hub, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "kleinmaelzung.cli", *args, "--hub", lab.url],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def setpoint(lab: Lab) -> float:
    """The kiln's setpoint as the instrument itself reports it."""
    done = kmz(lab, "send", "kiln-air", "get_setpoint", "--json")
    assert done.returncode == 0, done.stderr
    return float(msgspec.json.decode(done.stdout)["result"]["setpoint"])


@contextmanager
def stopped(proc: Process) -> Iterator[None]:
    """The process frozen with SIGSTOP (as a swapping or debugged Pi), resumed on exit."""
    os.kill(proc.popen.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.popen.pid, signal.SIGCONT)


def count(proc: Process, text: str) -> int:
    return proc.output().count(text)


def test_a_command_past_its_deadline_never_runs(lab: Lab) -> None:
    assert kmz(lab, "send", "kiln-air", "set_setpoint", "value=60").returncode == 0
    replies_before = _replies_from_agent(lab)
    with stopped(lab.agent):
        started = time.monotonic()
        first = kmz(lab, "send", "kiln-air", "set_setpoint", "value=123", "--timeout", "1")
        second = kmz(lab, "send", "kiln-air", "set_setpoint", "value=124", "--timeout", "2")
        waited = time.monotonic() - started
    # Resumed, the agent reads both commands from its socket and answers them.
    wait_until(
        lambda: _replies_from_agent(lab) >= replies_before + 2 or None,
        "the agent answering both late commands",
        DEADLINE_S,
        lab.agent,
    )
    assert setpoint(lab) == pytest.approx(60.0), "a command reported as not done ran late"
    assert lab.agent.output().count("deadline passed") >= 2
    for done in (first, second):
        # Not "failed": the agent got it and nobody knew whether it ran.
        assert done.returncode == 1
        assert "outcome_unknown" in done.stderr
        assert "may have run" in done.stderr and "will not run" in done.stderr
    assert waited >= 3.0  # each was answered at its deadline + grace, not before


def test_a_command_from_a_connection_that_closed_never_runs(lab: Lab) -> None:
    assert kmz(lab, "send", "kiln-air", "set_setpoint", "value=61").returncode == 0
    refused_before = count(lab.agent, "command not run")
    with stopped(lab.agent):
        sender = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kleinmaelzung.cli",
                "send",
                "kiln-air",
                "set_setpoint",
                "value=125",
                "--timeout",
                "60",
                "--hub",
                lab.url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # The hub has forwarded the command into the stopped agent's socket.
            wait_until(
                lambda: _forwarded(lab, 125) or None,
                "the hub forwarding the command",
                DEADLINE_S,
                lab.hub,
            )
            lab.hub.kill()  # the agent's connection ends under the buffered command
            _, stderr = sender.communicate(timeout=DEADLINE_S)
        finally:
            if sender.poll() is None:
                sender.kill()
        # The client lost the hub after sending: it must not be told "failed".
        assert sender.returncode == 1
        assert "outcome_unknown" in stderr
        lab.start_hub()
    # Well inside the command's 60 s deadline, the agent wakes, reads the
    # command and the end of its connection, and does not run it.
    wait_until(
        lambda: count(lab.agent, "command not run") >= refused_before + 1 or None,
        "the agent refusing the command from its closed connection",
        DEADLINE_S,
        lab.agent,
    )
    assert "connection it came on closed" in lab.agent.output()
    lab.wait_all_online()
    assert setpoint(lab) == pytest.approx(61.0)


def _forwarded(lab: Lab, value: float) -> bool:
    """Whether the hub's log shows a set_setpoint to `value` sent out to the agent."""
    page = get_json(lab.url + "/api/log?limit=50") or {"entries": []}
    return any(
        entry["direction"] == "out"
        and entry["type"] == "command"
        and entry["message"].get("args", {}).get("value") == value
        for entry in page["entries"]
    )


def _replies_from_agent(lab: Lab) -> int:
    """Replies the hub has logged from the agent."""
    page = get_json(lab.url + "/api/log?limit=200") or {"entries": []}
    return sum(1 for e in page["entries"] if e["direction"] == "in" and e["type"] == "reply")
