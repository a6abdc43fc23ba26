"""An instrument's timeline, from a lab of real processes: unplugged, replugged, a hub killed.

The hub and the agent are `kmz` processes; the thermometer is a simulated
instrument on a pty in this process, whose USB adapter the test pulls out
and plugs back in (a new tty, to which its stable name points again).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kleinmaelzung.sim import Simulator

from .processes import (
    DEADLINE_S,
    Process,
    free_port,
    get_json,
    wait_until,
    write_streaming_config,
)

pytestmark = pytest.mark.slow


def link_tty(tty_dir: Path, instrument_id: str, target: str) -> Path:
    """Point `tty_dir/instrument_id` at `target`, as udev does for /dev/serial/by-id."""
    link = tty_dir / instrument_id
    temporary = tty_dir / f".{instrument_id}.new"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    temporary.replace(link)
    return link


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(["therm-01", "therm-02"], seed=3)
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


def kmz_log(*args: str) -> subprocess.CompletedProcess[str]:
    """`kmz log ARGS` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "kleinmaelzung.cli", "log", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def state_of(url: str, instrument: str) -> str | None:
    for record in get_json(url + "/api/instruments") or []:
        if record["id"] == instrument:
            return str(record["state"])
    return None


def test_the_timeline_of_an_instrument_unplugged_and_replugged(
    tmp_path: Path, sim: Simulator
) -> None:
    tty_dir = tmp_path / "tty"
    tty_dir.mkdir()
    ports = {i: str(link_tty(tty_dir, i, path)) for i, path in sim.paths.items()}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hub_args = ["hub", "--port", str(port), "--data", str(tmp_path / "data")]
    config = write_streaming_config(
        tmp_path / "agent.toml",
        url,
        ports,
        poll_interval_s=0.2,
        spool_path=tmp_path / "spool.sqlite3",
        agent_id="bench-pi",
    )
    processes: list[Process] = []
    try:
        hub = Process("hub", hub_args, tmp_path)
        processes.append(hub)
        wait_until(lambda: get_json(url + "/api/health"), "hub health", DEADLINE_S, hub)
        agent = Process("agent", ["agent", str(config)], tmp_path)
        processes.append(agent)

        def becomes(state: str) -> None:
            wait_until(
                lambda: True if state_of(url, "therm-01") == state else None,
                f"therm-01 {state}",
                DEADLINE_S,
                *processes[-2:],
            )

        becomes("online")
        sim.unplug("therm-01")
        becomes("faulted")
        link_tty(tty_dir, "therm-01", sim.replug("therm-01"))
        becomes("online")
        # The hub dies without a word; its successor finds the agent back.
        hub.kill()
        hub = Process("hub-again", hub_args, tmp_path)
        processes.append(hub)
        wait_until(lambda: get_json(url + "/api/health"), "hub health", DEADLINE_S, hub)
        processes.append(processes.pop(-2))  # the agent, watched beside the new hub
        becomes("online")

        shown = kmz_log("--timeline", "therm-01", "--json", "--hub", url)
        assert shown.returncode == 0, shown.stderr
        timeline = json.loads(shown.stdout)
        changes = [(c["state"], c["cause"]) for c in timeline["changes"]]
        assert changes == [
            ("online", "agent connected"),
            ("faulted", "port vanished"),
            ("online", "recovered"),
            ("offline", "hub restart"),
            ("online", "agent connected"),
        ], timeline
        times = [c["ts"] for c in timeline["changes"]]
        assert times == sorted(times)
        assert all(c["agent"] == "bench-pi" for c in timeline["changes"])
        # Its neighbour was never unplugged; the agent's own timeline has the restart.
        other = kmz_log("--timeline", "therm-02", "--hub", url)
        lines = other.stdout.splitlines()
        assert [line.split(maxsplit=2)[2] for line in lines] == [
            "online   agent connected (agent bench-pi connected)",
            "offline  hub restart (the hub stopped without logging so; it started again)",
            "online   agent connected (agent bench-pi connected)",
        ], other.stdout + other.stderr
        agent_view = json.loads(
            kmz_log("--agent-timeline", "bench-pi", "--json", "--hub", url).stdout
        )
        assert [c["cause"] for c in agent_view["changes"]] == [
            "agent connected",
            "hub restart",
            "agent connected",
        ]
    finally:
        for proc in reversed(processes):
            proc.stop()
        shutil.rmtree(tty_dir, ignore_errors=True)
