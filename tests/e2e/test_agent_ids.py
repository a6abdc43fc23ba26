"""Two real agents with one agent_id: the newer one serves, the older one is told why and stops.

Issue 7, defect 5: they replaced each other every 0.1-2 s, forever, and the
replaced agent only logged `disconnected from hub`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import start_hub, write_agent_config
from .processes import Process, free_port, get_json, read_json_file, wait_until

pytestmark = pytest.mark.slow

DEADLINE_S = 20.0


def states(url: str) -> dict[str, str]:
    return {r["id"]: r["state"] for r in get_json(url + "/api/instruments") or []}


def hellos(url: str) -> int:
    page = get_json(url + "/api/log?limit=1000") or {"entries": []}
    return sum(1 for e in page["entries"] if e["type"] == "agent_hello")


def test_the_replaced_agent_is_told_why_and_stops(tmp_path: Path) -> None:
    paths_file = tmp_path / "ptys.json"
    started: list[Process] = []
    try:
        sim = Process("sim", ["sim", "--seed", "7", "--paths-file", str(paths_file)], tmp_path)
        started.append(sim)
        paths = wait_until(lambda: read_json_file(paths_file), "simulator ptys", DEADLINE_S, sim)
        port = free_port()
        hub = start_hub(tmp_path, port)
        started.append(hub)
        url = f"http://127.0.0.1:{port}"
        # Two Pis by mistake given one id: each has its own disk, and spool.
        first_config = write_agent_config(
            tmp_path / "a.toml",
            url,
            paths,
            agent_id="twin-pi",
            ids=["kiln-air", "balance"],
            spool=tmp_path / "a.spool",
        )
        second_config = write_agent_config(
            tmp_path / "b.toml",
            url,
            paths,
            agent_id="twin-pi",
            ids=["steep-water", "germ-chamber"],
            spool=tmp_path / "b.spool",
        )
        first = Process("first", ["agent", str(first_config)], tmp_path)
        started.append(first)
        wait_until(
            lambda: states(url).get("balance") == "online" or None,
            "the first agent online",
            DEADLINE_S,
            hub,
            first,
        )
        second = Process("second", ["agent", str(second_config)], tmp_path)
        started.append(second)
        # The first agent is told, says so, and stops: it does not take the id back.
        status = first.popen.wait(timeout=DEADLINE_S)
        assert status == 1
        told = first.output()
        assert "ERROR" in told and "twin-pi" in told
        assert "replaced by a newer connection of agent 'twin-pi' from 127.0.0.1" in told
        assert "Traceback" not in told
        wait_until(
            lambda: states(url).get("steep-water") == "online" or None,
            "the second agent online",
            DEADLINE_S,
            hub,
            second,
        )
        listed = states(url)
        assert (listed["kiln-air"], listed["balance"]) == ("offline", "offline")
        assert listed["germ-chamber"] == "online"
        # No flapping: one hello each, and the second agent stays connected.
        assert hellos(url) == 2
        assert second.popen.poll() is None
        assert "replaced" not in second.output()
    finally:
        for proc in reversed(started):
            proc.stop()
