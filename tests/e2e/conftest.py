"""The demo lab as separate processes: simulator, hub and agent, each a real `kmz`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .processes import Process, free_port, get_json, read_json_file, wait_until

INSTRUMENTS = {
    "steep-water": ("kmz-thermometer", 0.2),
    "germ-chamber": ("kmz-hygrometer", 0.2),
    "kiln-air": ("kmz-kiln", 0.1),
    "balance": ("mt-sics-balance", 0.1),
}


@dataclass
class Lab:
    """Running processes of one end-to-end lab, and how to reach them."""

    tmp: Path
    url: str
    port: int
    sim: Process
    hub: Process
    agent: Process
    config: Path

    def start_hub(self) -> Process:
        """(Re)start the hub on the same port and data directory."""
        self.hub = start_hub(self.tmp, self.port)
        return self.hub

    def start_agent(self) -> Process:
        """(Re)start the agent with the same config."""
        self.agent = Process("agent", ["agent", str(self.config)], self.tmp)
        return self.agent

    def instruments(self) -> dict[str, dict[str, object]]:
        """The hub's instrument list by id (empty while the hub is down)."""
        listed = get_json(self.url + "/api/instruments") or []
        return {record["id"]: record for record in listed}

    def wait_all_online(self) -> None:
        """Wait until every instrument is online at the hub."""
        wait_until(
            lambda: (
                True
                if all(r.get("state") == "online" for r in self.instruments().values())
                and len(self.instruments()) == len(INSTRUMENTS)
                else None
            ),
            "all instruments online",
            20.0,
            self.hub,
            self.agent,
        )


def start_hub(tmp: Path, port: int) -> Process:
    """A `kmz hub` process, returned once /api/health answers."""
    hub = Process("hub", ["hub", "--port", str(port), "--data", str(tmp / "data")], tmp)
    wait_until(lambda: get_json(f"http://127.0.0.1:{port}/api/health"), "hub health", 15.0, hub)
    return hub


def write_agent_config(
    path: Path,
    url: str,
    paths: dict[str, str],
    *,
    agent_id: str = "e2e-pi",
    ids: Iterable[str] = INSTRUMENTS,
    spool: Path | None = None,
) -> Path:
    """An agent config for (some of) the simulated lab, as a user would write it."""
    lines = [f'hub = "{url}"', f'agent_id = "{agent_id}"', ""]
    if spool is not None:
        lines += ["[spool]", f'path = "{spool}"', ""]
    for instrument_id in ids:
        profile, poll_s = INSTRUMENTS[instrument_id]
        lines += [
            "[[instruments]]",
            f'id = "{instrument_id}"',
            f'profile = "{profile}"',
            f'port = "{paths[instrument_id]}"',
            f"poll_interval_s = {poll_s}",
            "",
        ]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """Simulator, hub and agent as three processes, all instruments online."""
    paths_file = tmp_path / "ptys.json"
    sim = Process("sim", ["sim", "--seed", "7", "--paths-file", str(paths_file)], tmp_path)
    started = [sim]
    try:
        paths = wait_until(lambda: read_json_file(paths_file), "simulator ptys", 15.0, sim)
        port = free_port()
        hub = start_hub(tmp_path, port)
        started.append(hub)
        config = tmp_path / "agent.toml"
        url = f"http://127.0.0.1:{port}"
        write_agent_config(config, url, paths)
        lab = Lab(
            tmp_path,
            url,
            port,
            sim,
            hub,
            Process("agent", ["agent", str(config)], tmp_path),
            config,
        )
        started.append(lab.agent)
        lab.wait_all_online()
        yield lab
        started = [lab.agent, lab.hub, sim]
    finally:
        for proc in started:
            proc.stop()
