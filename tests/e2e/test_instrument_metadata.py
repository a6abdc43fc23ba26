"""Instrument metadata held at the hub (issue 17, item 5), with a real `kmz hub` process and
`kmz instrument-meta` as an admin runs it: set, shown to clients, refused to viewers and
operators, audited with old and new values, kept across a restart; the agent's description
shows until an admin sets one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.client import Client
from kleinmaelzung.hub.auth import Role, SqliteCredentials

from ..hub.auth_setup import agent_hello, greeted
from .processes import Process, free_port, get_json, wait_until
from .test_fleet import http

pytestmark = pytest.mark.slow

AGENT = "bench-pi"


@dataclass
class Hub:
    tmp: Path
    url: str
    port: int
    tokens: dict[str, str]
    process: Process | None = None

    def start(self, name: str = "hub") -> None:
        args = ["hub", "--port", str(self.port), "--data", str(self.tmp / "data")]
        self.process = Process(name, args, self.tmp)
        wait_until(lambda: get_json(self.url + "/api/health"), "hub health", 15.0, self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kmz(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kleinmaelzung.cli", *args, "--hub", self.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "KMZ_TOKEN": self.tokens[user]},
        )

    def log(self, kind: str, count: int) -> list[dict[str, Any]]:
        """The first `count` entries of a kind, once the log holds them (it commits in batches)."""
        url = f"{self.url}/api/log?kind={kind}&order=oldest"

        def entries() -> list[dict[str, Any]] | None:
            found = list(http("GET", url, None, self.tokens["ada"])[1]["entries"])
            return found if len(found) >= count else None

        return wait_until(entries, f"{count} {kind} entries")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    store = SqliteCredentials(tmp_path / "data")
    tokens = {}
    for user, role in (("ada", Role.ADMIN), ("oscar", Role.OPERATOR), ("vic", Role.VIEWER)):
        store.add_user(user, role)
        tokens[user] = store.create_token(user=user)[1]
    tokens["agent"] = store.create_token(agent=AGENT, instruments=("steep-water",))[1]
    store.close()
    port = free_port()
    running = Hub(tmp_path, f"http://127.0.0.1:{port}", port, tokens)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def listed(hub: Hub, user: str = "vic") -> dict[str, Any]:
    return {
        r["id"]: r for r in http("GET", hub.url + "/api/instruments", None, hub.tokens[user])[1]
    }


async def test_an_admin_sets_metadata_with_kmz_and_everyone_sees_it(hub: Hub) -> None:
    hello = agent_hello(AGENT, ("steep-water",), hub.tokens["agent"])
    hello["instruments"][0]["description"] = "Steeping tank water (from the Pi)"
    async with greeted(hub.url, "/ws/agent", hello):
        # Until an admin sets anything, the agent's description shows, and no metadata.
        record = listed(hub)["steep-water"]
        assert record["description"] == "Steeping tank water (from the Pi)"
        assert "metadata" not in record

        done = await asyncio.to_thread(
            hub.kmz,
            "ada",
            "instrument-meta",
            "set",
            "steep-water",
            "--location",
            "Malting room",
            "--group",
            "Steeping",
            "--owner",
            "ada",
            "--calibration-interval",
            "180",
        )
        assert done.returncode == 0, done.stderr
        assert "Malting room" in done.stdout
        assert "Steeping tank water (from the Pi)  (from the agent)" in done.stdout

        record = listed(hub)["steep-water"]
        assert record["metadata"] == {
            "location": "Malting room",
            "group": "Steeping",
            "owner": "ada",
            "calibration_interval_days": 180,
        }
        assert record["description"] == "Steeping tank water (from the Pi)"

        # The central description wins over the Pi's once set; other fields keep theirs.
        done = await asyncio.to_thread(
            hub.kmz, "ada", "instrument-meta", "set", "steep-water", "--description", "Tank 1"
        )
        assert done.returncode == 0, done.stderr
        got = await asyncio.to_thread(
            hub.kmz, "ada", "instrument-meta", "get", "steep-water", "--json"
        )
        view = json.loads(got.stdout)
        assert view["description"] == "Tank 1" and view["updated_by"] == "ada"
        assert view["announced_description"] == "Steeping tank water (from the Pi)"
        assert view["metadata"]["location"] == "Malting room"

        # The Python client decodes it, over the WebSocket (protocol 4)...
        async with Client(hub.url, token=hub.tokens["vic"]) as client:
            [instrument] = await client.instruments()
        assert instrument.description == "Tank 1"
        assert instrument.metadata and instrument.metadata.group == "Steeping"
        # ... and a client of protocol 3 gets the records it knows, without the field.
        v3 = {"type": "client_hello", "protocol": 3, "token": hub.tokens["vic"]}
        async with greeted(hub.url, "/ws/client", v3) as old:
            await old.send({"type": "list_instruments", "id": "1"})
            [old_record] = (await old.receive())["instruments"]
        assert "metadata" not in old_record and old_record["description"] == "Tank 1"

    # A viewer and an operator are refused, by HTTP and by kmz, and nothing changes.
    url = f"{hub.url}/api/instruments/steep-water/metadata"
    for user in ("oscar", "vic"):
        assert http("PUT", url, {"location": "Cellar"}, hub.tokens[user])[0] == 403
        assert http("GET", url, None, hub.tokens[user])[0] == 403
        refused = await asyncio.to_thread(
            hub.kmz, user, "instrument-meta", "set", "steep-water", "--location", "Cellar"
        )
        assert refused.returncode == 1 and "forbidden" in refused.stderr
    assert listed(hub, "ada")["steep-water"]["metadata"]["location"] == "Malting room"
    refusals = [e for e in hub.log("refused", 4) if "metadata" in json.dumps(e["message"])]
    assert {e["peer"] for e in refusals} == {"oscar", "vic"}

    # The audit trail: who, when, the old and the new values.
    first, second = hub.log("instrument_metadata", 2)
    assert first["peer"] == "ada" and first["instrument"] == "steep-water"
    assert first["message"]["changed"]["location"] == {"old": "", "new": "Malting room"}
    assert first["message"]["changed"]["calibration_interval_days"] == {"old": None, "new": 180}
    assert second["message"]["changed"] == {"description": {"old": "", "new": "Tank 1"}}
    assert second["ts"] >= first["ts"]

    # Kept across a restart of the hub, before the agent is back.
    hub.stop()
    hub.start("hub-again")
    record = listed(hub)["steep-water"]
    assert record["metadata"]["location"] == "Malting room"
    assert record["description"] == "Tank 1"
