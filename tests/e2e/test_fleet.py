"""Configuration held at the hub (issue 17), with real processes: `kmz sim` thermometers on
ptys, `kmz hub`, `kmz agent`, and `kmz agent-config` as an admin runs it."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .processes import (
    Process,
    free_port,
    get_json,
    read_json_file,
    wait_until,
    watch_lines,
)

pytestmark = pytest.mark.slow

AGENT = "fleet-pi"
#: therm-04 is simulated from the start, on a pty of its own, but not configured.
SIMULATED = ["therm-01", "therm-02", "therm-03", "therm-04"]
CONFIGURED = SIMULATED[:3]
POLL_S = 0.2


@dataclass
class FleetLab:
    tmp: Path
    url: str
    port: int
    paths: dict[str, str]
    config: Path
    agent_token: str | None = None
    processes: list[Process] = field(default_factory=list)
    hub: Process | None = None
    agent: Process | None = None
    starts: int = 0

    def start_hub(self) -> Process:
        self.starts += 1
        args = ["hub", "--port", str(self.port), "--data", str(self.tmp / "data")]
        self.hub = Process(f"hub-{self.starts}", args, self.tmp)
        self.processes.append(self.hub)
        wait_until(lambda: get_json(self.url + "/api/health"), "hub health", 15.0, self.hub)
        return self.hub

    def start_agent(self) -> Process:
        self.starts += 1
        self.agent = Process(f"agent-{self.starts}", ["agent", str(self.config)], self.tmp)
        self.processes.append(self.agent)
        return self.agent

    def agents(self, token: str | None = None) -> dict[str, dict[str, Any]]:
        listed = http("GET", self.url + "/api/agents", token=token)[1] or []
        return {a["id"]: a for a in listed}

    def wait_running(self, revision: int, online: list[str], token: str | None = None) -> None:
        """Until the hub says the agent runs `revision` and these instruments are online."""

        def done() -> bool | None:
            agent = self.agents(token).get(AGENT)
            if not agent or not agent["online"] or agent["config_revision"] != revision:
                return None
            states = {
                i["id"]: i["state"]
                for i in http("GET", self.url + "/api/instruments", token=token)[1]
            }
            return True if all(states.get(i) == "online" for i in online) else None

        procs = [p for p in (self.hub, self.agent) if p is not None]
        wait_until(done, f"revision {revision} with {online} online", 20.0, *procs)

    def kmz(self, *args: str, stdin: str | None = None, token: str | None = None) -> Any:
        env = {"KMZ_TOKEN": token} if token else {}
        return subprocess.run(
            [sys.executable, "-m", "kleinmaelzung.cli", *args, "--hub", self.url],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=60,
            check=False,
            env={**os.environ, **env},
        )

    def outputs(self) -> str:
        return "\n".join(f"--- {p.name}:\n{p.output()[-3000:]}" for p in self.processes)


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=45) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except OSError:
        return 0, None


def instrument_table(instrument_id: str, port: str, poll_s: float = POLL_S) -> str:
    return (
        f'[[instruments]]\nid = "{instrument_id}"\nport = "{port}"\n'
        f'profile = "kmz-thermometer"\npoll_interval_s = {poll_s}\n'
    )


def start_lab(tmp: Path, *, agent_token: str | None = None) -> FleetLab:
    paths_file = tmp / "ptys.json"
    sim = Process("sim", ["sim", "--seed", "3", "--paths-file", str(paths_file), *SIMULATED], tmp)
    paths = wait_until(lambda: read_json_file(paths_file), "simulator ptys", 15.0, sim)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp / "agent.toml"
    lines = [f'hub = "{url}"', f'agent_id = "{AGENT}"']
    if agent_token:
        lines.append(f'token = "{agent_token}"')
    lines += ["", "[spool]", f'path = "{tmp / "spool.sqlite"}"', ""]
    config.write_text(
        "\n".join(lines) + "\n" + "\n".join(instrument_table(i, paths[i]) for i in CONFIGURED)
    )
    lab = FleetLab(tmp, url, port, paths, config, agent_token, [sim])
    return lab


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[FleetLab]:
    lab = start_lab(tmp_path)
    try:
        lab.start_hub()
        lab.start_agent()
        lab.wait_running(0, CONFIGURED)
        yield lab
    finally:
        for proc in reversed(lab.processes):
            proc.stop()


def edited(lab: FleetLab, *, add: bool = True, therm_02_poll_s: float = 0.05) -> str:
    """What an admin makes of `kmz agent-config get`: therm-04 added, therm-02 faster."""
    got = lab.kmz("agent-config", "get", AGENT)
    assert got.returncode == 0, got.stderr
    text = got.stdout.replace(
        f'id = "therm-02"\npoll_interval_s = {POLL_S}\n',
        f'id = "therm-02"\npoll_interval_s = {therm_02_poll_s}\n',
    )
    assert text != got.stdout, got.stdout
    if add:
        text += "\n" + instrument_table("therm-04", lab.paths["therm-04"])
    return text


def intervals(lab: FleetLab, instrument: str, count: int) -> float:
    """The median time between `count` live samples of an instrument, by their stamps."""
    watched = lab.kmz("watch", instrument, "--count", str(count), "--json")
    assert watched.returncode == 0, watched.stderr
    stamps = [s["ts"] for s in watch_lines(watched.stdout)]
    return statistics.median(b - a for a, b in itertools.pairwise(stamps))


def test_a_remote_config_adds_an_instrument_and_changes_a_poll_interval_without_a_gap(
    lab: FleetLab,
) -> None:
    watcher = Process("watch", ["watch", "therm-01", "--json", "--hub", lab.url], lab.tmp)
    lab.processes.append(watcher)
    wait_until(lambda: len(watch_lines(watcher.output())) >= 3 or None, "watching", 15, watcher)
    (lab.tmp / "lab.toml").write_text(edited(lab))

    result = lab.kmz("agent-config", "set", AGENT, str(lab.tmp / "lab.toml"))

    assert result.returncode == 0, result.stderr + lab.outputs()
    assert "runs revision 1" in result.stdout
    assert "therm-04" in result.stdout and "added" in result.stdout
    assert "therm-02" in result.stdout and "changed" in result.stdout
    lab.wait_running(1, SIMULATED)
    # therm-04 measures, therm-02 at its new rate.
    assert intervals(lab, "therm-04", 3) == pytest.approx(POLL_S, abs=0.1)
    assert intervals(lab, "therm-02", 8) == pytest.approx(0.05, abs=0.03)
    # The watcher of therm-01 saw every seq, before and after, and no status.
    seen = len(watch_lines(watcher.output()))
    wait_until(lambda: len(watch_lines(watcher.output())) >= seen + 5 or None, "more", 15, watcher)
    watcher.interrupt()
    seqs = [s["seq"] for s in watch_lines(watcher.output())]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert "offline" not in watcher.output() and "faulted" not in watcher.output()
    # The fleet view shows the revision, the host and that it accepts remote configuration.
    agent = lab.agents()[AGENT]
    assert agent["config_revision"] == 1 and agent["remote_config"] == "accept"
    assert agent["host"] and agent["instruments"] == SIMULATED


def test_an_invalid_config_is_refused_with_a_located_error_and_nothing_changes(
    lab: FleetLab,
) -> None:
    bad = edited(lab, therm_02_poll_s=-1)
    (lab.tmp / "lab.toml").write_text(bad)
    before = http("GET", lab.url + "/api/agents")[1]

    result = lab.kmz("agent-config", "set", AGENT, str(lab.tmp / "lab.toml"))

    assert result.returncode == 1
    assert "invalid_config" in result.stderr
    assert "lab.toml: instruments[1].poll_interval_s: expected a number of seconds greater" in (
        result.stderr
    )
    agent = lab.agents()[AGENT]
    assert agent["online"] and agent["config_revision"] == 0
    assert agent["run"] == before[0]["run"]  # the same connection: nothing restarted
    assert agent["instruments"] == CONFIGURED
    assert lab.agent is not None and lab.agent.popen.poll() is None
    assert intervals(lab, "therm-02", 4) == pytest.approx(POLL_S, abs=0.1)
    # And a table the hub's own file must set is refused as such.
    local = lab.kmz("agent-config", "set", AGENT, "-", stdin='hub = "http://elsewhere:1"\n')
    assert local.returncode == 1 and "stdin: hub: set in the agent's own file only" in (
        local.stderr
    )


def test_rollback_runs_the_previous_revision_again(lab: FleetLab) -> None:
    (lab.tmp / "lab.toml").write_text(edited(lab))
    assert lab.kmz("agent-config", "set", AGENT, str(lab.tmp / "lab.toml")).returncode == 0
    lab.wait_running(1, SIMULATED)

    result = lab.kmz("agent-config", "rollback", AGENT)

    assert result.returncode == 0, result.stderr
    assert "runs revision 0" in result.stdout and "removed" in result.stdout
    lab.wait_running(0, CONFIGURED)
    states = {i["id"]: i for i in http("GET", lab.url + "/api/instruments")[1]}
    assert states["therm-04"]["state"] == "offline"
    assert "removed" in states["therm-04"]["reason"]
    assert intervals(lab, "therm-02", 4) == pytest.approx(POLL_S, abs=0.1)
    again = lab.kmz("agent-config", "rollback", AGENT)
    assert again.returncode == 1 and "no_previous_revision" in again.stderr


def test_an_agent_restarted_with_the_hub_away_comes_back_with_the_last_revision(
    lab: FleetLab,
) -> None:
    (lab.tmp / "lab.toml").write_text(edited(lab))
    assert lab.kmz("agent-config", "set", AGENT, str(lab.tmp / "lab.toml")).returncode == 0
    lab.wait_running(1, SIMULATED)
    assert lab.hub is not None and lab.agent is not None
    lab.hub.interrupt()
    lab.agent.kill()  # a power cut: no chance to clean up

    agent = lab.start_agent()
    wait_until(
        lambda: "running the configuration kept from the hub" in agent.output() or None,
        "the kept revision",
        15,
        agent,
    )
    assert "revision=1" in agent.output()
    lab.start_hub()
    lab.wait_running(1, SIMULATED)
    assert intervals(lab, "therm-02", 8) == pytest.approx(0.05, abs=0.03)


def test_the_audit_entry_holds_who_the_diff_and_the_outcome(lab: FleetLab) -> None:
    (lab.tmp / "lab.toml").write_text(edited(lab))
    assert lab.kmz("agent-config", "set", AGENT, str(lab.tmp / "lab.toml")).returncode == 0

    def audit() -> list[Any] | None:
        logged = lab.kmz("log", "--kind", "agent_config", "--json")
        assert logged.returncode == 0, logged.stderr
        return json.loads(logged.stdout) or None

    entries = wait_until(audit, "the audit entry")
    assert len(entries) == 1, entries
    message = entries[0]["message"]
    assert entries[0]["peer"] == message["by"] == "anonymous"
    assert message["agent"] == AGENT and message["action"] == "set" and message["ok"]
    assert message["revision"] == 1 and message["running"] == 1
    diff = message["diff"]
    assert "--- fleet-pi revision 0" in diff and "+++ lab.toml (revision 1)" in diff
    assert "+poll_interval_s = 0.05" in diff and f"-poll_interval_s = {POLL_S}" in diff
    assert '+id = "therm-04"' in diff
    added = {i["id"]: i for i in message["instruments"]}
    assert added["therm-04"] == {"id": "therm-04", "change": "added", "state": "online"}


def test_a_viewer_or_operator_token_cannot_change_configuration(tmp_path: Path) -> None:
    from kleinmaelzung.hub.auth import Role, SqliteCredentials

    store = SqliteCredentials(tmp_path / "data")
    tokens = {}
    for user, role in (("ada", Role.ADMIN), ("oscar", Role.OPERATOR), ("vic", Role.VIEWER)):
        store.add_user(user, role)
        tokens[user] = store.create_token(user=user)[1]
    agent_token = store.create_token(agent=AGENT, instruments=("therm-*",))[1]
    lab = start_lab(tmp_path, agent_token=agent_token)
    try:
        lab.start_hub()
        lab.start_agent()
        lab.wait_running(0, CONFIGURED, token=tokens["ada"])
        body = {"config": instrument_table("therm-04", lab.paths["therm-04"]), "source": "x"}
        config_url = f"{lab.url}/api/agents/{AGENT}/config"
        for user in ("oscar", "vic"):
            token = tokens[user]
            assert http("PUT", config_url, body, token)[0] == 403
            assert http("POST", config_url + "/rollback", None, token)[0] == 403
            assert http("GET", config_url, None, token)[0] == 403
            refused = lab.kmz("agent-config", "set", AGENT, "-", stdin=body["config"], token=token)
            assert refused.returncode == 1 and "forbidden" in refused.stderr
        assert lab.agents(tokens["ada"])[AGENT]["config_revision"] == 0
        # ... while an admin can: the same request runs.
        status, outcome = http("PUT", config_url, body, tokens["ada"])
        assert status == 200 and outcome["running"] == 1, outcome
        logged = wait_until(
            lambda: (
                http("GET", f"{lab.url}/api/log?kind=agent_config", None, tokens["ada"])[1][
                    "entries"
                ]
                or None
            ),
            "the audit entry",
        )
        assert [e["peer"] for e in logged] == ["ada"]
    finally:
        for proc in reversed(lab.processes):
            proc.stop()
