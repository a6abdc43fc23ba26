"""TLS end to end: `kmz hub --tls-cert`, an agent and `kmz` over https/wss, as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..hub.certificates import make_certificates
from .conftest import write_agent_config
from .processes import Process, free_port, read_json_file, wait_until


def kmz(*args: str, timeout: float = 30.0, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KMZ_CA", "KMZ_PIN")} | env_vars
    return subprocess.run(
        [sys.executable, "-m", "kleinmaelzung.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.slow
def test_an_agent_streams_through_wss_to_kmz_watch(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "tls")
    paths_file = tmp_path / "ptys.json"
    started: list[Process] = []
    try:
        sim = Process("sim", ["sim", "--seed", "7", "--paths-file", str(paths_file)], tmp_path)
        started.append(sim)
        paths = wait_until(lambda: read_json_file(paths_file), "simulator ptys", 15.0, sim)
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        hub = Process(
            "hub",
            [
                "hub", "--port", str(port), "--data", str(tmp_path / "data"),
                "--tls-cert", str(certs.cert), "--tls-key", str(certs.key),
            ],
            tmp_path,
        )  # fmt: skip
        started.append(hub)
        wait_until(lambda: True if f"kmz hub on {url}" in hub.output() else None, "hub", 15, hub)
        config = write_agent_config(tmp_path / "agent.toml", url, paths, ids=["kiln-air"])
        config.write_text(config.read_text().replace("\n", f'\nca_file = "{certs.ca}"\n', 1))
        agent = Process("agent", ["agent", str(config)], tmp_path)
        started.append(agent)

        trusting = ("--hub", url, "--ca", str(certs.ca), "--pin", certs.pin)
        watched = kmz("watch", "kiln-air", "--count", "3", "--json", *trusting)
        assert watched.returncode == 0, watched.stderr + agent.output() + hub.output()
        samples = [json.loads(line) for line in watched.stdout.splitlines()]
        assert len(samples) == 3
        assert all(s["instrument"] == "kiln-air" for s in samples)
        listed = kmz("instruments", "--json", *trusting)
        assert listed.returncode == 0, listed.stderr
        assert [r["id"] for r in json.loads(listed.stdout)] == ["kiln-air"]
        agents = kmz("agents", "--json", *trusting)  # the HTTP API, over https
        assert agents.returncode == 0, agents.stderr
        assert [a["id"] for a in json.loads(agents.stdout)] == ["e2e-pi"]
        logged = kmz("log", "--limit", "3", "--hub", url, KMZ_CA=str(certs.ca))
        assert logged.returncode == 0, logged.stderr

        refused = kmz("instruments", "--hub", url)  # the system's CAs never signed it
        assert refused.returncode == 3
        assert "its certificate is not trusted" in refused.stderr
        pinned_wrong = kmz("agents", "--hub", url, "--ca", str(certs.ca), "--pin", "00" * 32)
        assert pinned_wrong.returncode == 3
        assert "not the pinned one" in pinned_wrong.stderr
        for proc in (agent, hub):
            assert "Traceback" not in proc.output(), proc.output()
    finally:
        for proc in reversed(started):
            proc.stop()
