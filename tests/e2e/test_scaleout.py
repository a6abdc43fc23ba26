"""Two and three `kmz hub` processes as one over the real NATS server (issue 16).

An agent streams the simulated kiln and steeping tank to hub A; a client of
hub B lists them, subscribes by pattern (before they appear), receives their
data and status, and commands them, with the errors of one hub. With a third
hub C, a pattern subscription on hub B picks up an instrument whose agent
joins hub C, while another agent streams to hub A.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kleinmaelzung.client import Client
from kleinmaelzung.protocol import CommandError, ErrorCode, Sample, Status

from .conftest import write_agent_config
from .processes import Process, free_port, get_json, read_json_file, wait_until

pytestmark = pytest.mark.slow

NATS_SERVER = "/usr/sbin/nats-server"
NATS_HOST, NATS_PORT = "127.0.0.1", 4222
DEADLINE_S = 15.0
INSTRUMENTS = ("kiln-air", "steep-water")


def _nats_answers() -> bool:
    try:
        with socket.create_connection((NATS_HOST, NATS_PORT), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def nats_server() -> str:
    """The NATS server on 127.0.0.1:4222, started if it is installed and not running."""
    if not _nats_answers():
        if not os.path.exists(NATS_SERVER) or shutil.which("start-stop-daemon") is None:
            pytest.skip(
                f"nats-server is not installed ({NATS_SERVER}): apt-get install nats-server"
            )
        subprocess.run(
            [
                "start-stop-daemon", "--start", "--oknodo", "--background",
                "--exec", NATS_SERVER, "--",
                "-a", NATS_HOST, "-p", str(NATS_PORT), "-js",
                "-sd", "/var/lib/nats-server", "-l", "/var/log/nats-server.log",
            ],
            check=True,
            timeout=DEADLINE_S,
        )  # fmt: skip
        wait_until(lambda: True if _nats_answers() else None, "nats-server on 4222", DEADLINE_S)
    return f"nats://{NATS_HOST}:{NATS_PORT}"


@dataclass
class TwoHubs:
    tmp: Path
    a_url: str
    b_url: str
    a: Process
    b: Process
    sim: Process
    agent_config: Path
    processes: list[Process]
    bus: str
    prefix: str

    def start_agent(self, config: Path | None = None, name: str = "agent") -> Process:
        agent = Process(name, ["agent", str(config or self.agent_config)], self.tmp)
        self.processes.append(agent)
        return agent

    def start_hub(self, name: str) -> str:
        """One more hub on the same bus and prefix; its URL."""
        hub, url = _start_hub(self.tmp, name, self.bus, self.prefix)
        self.processes.append(hub)
        return url

    def listed(self, url: str) -> dict[str, dict[str, object]]:
        return {r["id"]: r for r in get_json(url + "/api/instruments") or []}


def _start_hub(tmp: Path, name: str, bus: str, prefix: str) -> tuple[Process, str]:
    port = free_port()
    config = tmp / f"{name}.toml"
    config.write_text(f'name = "{name}"\nbus = "{bus}"\nbus_prefix = "{prefix}"\n')
    args = ["hub", "--config", str(config), "--port", str(port), "--data", str(tmp / name)]
    hub = Process(name, args, tmp)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: get_json(url + "/api/health"), f"{name} health", DEADLINE_S, hub)
    return hub, url


@pytest.fixture
def two_hubs(tmp_path: Path, nats_server: str) -> Iterator[TwoHubs]:
    """Hubs A and B on one bus (a subject prefix of this test's own), and the simulator."""
    prefix = f"kmztest.{uuid.uuid4().hex}"
    paths_file = tmp_path / "ptys.json"
    sim = Process("sim", ["sim", "--seed", "7", "--paths-file", str(paths_file)], tmp_path)
    processes = [sim]
    try:
        paths = wait_until(lambda: read_json_file(paths_file), "simulator ptys", DEADLINE_S, sim)
        a, a_url = _start_hub(tmp_path, "hub-a", nats_server, prefix)
        processes.append(a)
        b, b_url = _start_hub(tmp_path, "hub-b", nats_server, prefix)
        processes.append(b)
        config = write_agent_config(
            tmp_path / "agent.toml", a_url, paths, agent_id="scaleout-pi", ids=INSTRUMENTS
        )
        yield TwoHubs(tmp_path, a_url, b_url, a, b, sim, config, processes, nats_server, prefix)
    finally:
        for proc in reversed(processes):
            proc.stop()


async def _next(events: object, want: type, instrument: str, timeout: float = DEADLINE_S) -> object:
    """The next event of type `want` for `instrument`, within `timeout`."""

    async def find() -> object:
        async for event in events:  # type: ignore[attr-defined]
            if isinstance(event, want) and getattr(event, "instrument", None) == instrument:
                return event
        raise AssertionError("subscription ended")

    return await asyncio.wait_for(find(), timeout)


async def test_agent_on_hub_a_client_on_hub_b(two_hubs: TwoHubs) -> None:
    lab = two_hubs
    async with Client(lab.b_url, name="scaleout") as client:
        # Subscribed by pattern before any instrument exists anywhere: it
        # picks up the kiln when its agent joins hub A.
        kiln = client.subscribe("kiln-*", status=True)
        assert (await kiln).instruments == []
        agent = lab.start_agent()

        online = await _next(kiln, Status, "kiln-air")
        assert isinstance(online, Status) and online.state == "online"
        sample = await _next(kiln, Sample, "kiln-air")
        assert isinstance(sample, Sample) and "temperature" in sample.values

        # The instrument list of hub B names hub A's instruments, online.
        listed = await wait_until_async_listed(lab, lab.b_url)
        assert listed["kiln-air"]["agent"] == "scaleout-pi"
        records = {r.id: r for r in await client.instruments()}
        assert records["steep-water"].state == "online"
        assert {c.name for c in records["kiln-air"].commands} >= {"set_setpoint", "get_setpoint"}

        # Commands through hub B run at the agent of hub A, replies come back.
        started = time.monotonic()
        await client.command("kiln-air", "set_setpoint", value=77)
        result = await client.command("kiln-air", "get_setpoint")
        assert float(result["setpoint"]) == 77.0
        assert time.monotonic() - started < 5.0

        # The errors of one hub: a command the instrument does not have, an
        # instrument no hub knows.
        with pytest.raises(CommandError) as unknown_command:
            await client.command("kiln-air", "explode")
        assert unknown_command.value.code == ErrorCode.UNKNOWN_COMMAND
        with pytest.raises(CommandError) as unknown:
            await client.command("no-such-thing", "tare")
        assert unknown.value.code == ErrorCode.UNKNOWN_INSTRUMENT

        # Deadlines as on one hub: the agent frozen, hub A answers
        # outcome_unknown at the deadline and its grace, and hub B relays it.
        os.kill(agent.popen.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(CommandError) as late:
                await client.command("kiln-air", "get_setpoint", timeout_s=1.0)
            took = time.monotonic() - started
        finally:
            os.kill(agent.popen.pid, signal.SIGCONT)
        assert late.value.code == ErrorCode.OUTCOME_UNKNOWN
        assert "no reply from agent 'scaleout-pi' by the command's deadline" in late.value.message
        assert 1.0 <= took < 3.0

        # The agent stops: hub B's client is told, and a command is refused
        # as offline, as on one hub.
        agent.interrupt()
        offline = await _next(kiln, Status, "kiln-air")
        assert isinstance(offline, Status) and offline.state == "offline"
        with pytest.raises(CommandError) as refused:
            await client.command("kiln-air", "get_setpoint")
        assert refused.value.code == ErrorCode.INSTRUMENT_OFFLINE
        await kiln.close()


async def test_three_hubs_a_pattern_on_b_picks_up_an_instrument_of_hub_c(
    two_hubs: TwoHubs,
) -> None:
    lab = two_hubs
    c_url = lab.start_hub("hub-c")
    paths = read_json_file(lab.tmp / "ptys.json")
    on_a = write_agent_config(
        lab.tmp / "agent-a.toml", lab.a_url, paths, agent_id="pi-a", ids=("steep-water",)
    )
    on_c = write_agent_config(
        lab.tmp / "agent-c.toml", c_url, paths, agent_id="pi-c", ids=("kiln-air",)
    )
    async with (
        Client(lab.b_url, name="watch-b") as client_b,
        Client(lab.a_url, name="watch-a") as client_a,
    ):
        # Subscribed by pattern on B (and on A) before any hub has a kiln.
        kilns_b = client_b.subscribe("kiln-*", status=True)
        assert (await kilns_b).instruments == []
        kilns_a = client_a.subscribe("kiln-*", status=True)
        assert (await kilns_a).instruments == []
        steep_b = client_b.subscribe("steep-*", status=True)
        assert (await steep_b).instruments == []
        lab.start_agent(on_a, "agent-a")
        assert isinstance(await _next(steep_b, Sample, "steep-water"), Sample)

        # The kiln appears on hub C: B's pattern (and A's) picks it up.
        lab.start_agent(on_c, "agent-c")
        for kilns in (kilns_b, kilns_a):
            online = await _next(kilns, Status, "kiln-air")
            assert isinstance(online, Status) and online.state == "online"
            sample = await _next(kilns, Sample, "kiln-air")
            assert isinstance(sample, Sample) and "temperature" in sample.values

        # B lists what A's and C's agents serve, and commands C's kiln.
        records = {r.id: r for r in await client_b.instruments()}
        assert records["kiln-air"].agent == "pi-c" and records["kiln-air"].state == "online"
        assert records["steep-water"].agent == "pi-a"
        await client_b.command("kiln-air", "set_setpoint", value=64)
        result = await client_a.command("kiln-air", "get_setpoint")
        assert float(result["setpoint"]) == 64.0
        for subscription in (kilns_b, kilns_a, steep_b):
            await subscription.close()


async def wait_until_async_listed(lab: TwoHubs, url: str) -> dict[str, dict[str, object]]:
    """Hub `url`'s instrument list once it has both instruments online."""

    def both_online() -> dict[str, dict[str, object]] | None:
        listed = lab.listed(url)
        ok = all(listed.get(i, {}).get("state") == "online" for i in INSTRUMENTS)
        return listed if ok else None

    return await asyncio.to_thread(
        wait_until, both_online, "instruments online at hub B", DEADLINE_S, lab.b
    )


async def test_a_hub_killed_takes_its_instruments_offline_elsewhere(two_hubs: TwoHubs) -> None:
    lab = two_hubs
    agent = lab.start_agent()
    await wait_until_async_listed(lab, lab.b_url)
    async with Client(lab.b_url, name="scaleout") as client:
        steep = client.subscribe("steep-*", status=True)
        assert (await steep).instruments == ["steep-water"]
        await _next(steep, Sample, "steep-water")
        started = time.monotonic()
        lab.a.kill()  # SIGKILL: no goodbye on the bus, only silence
        offline = await _next(steep, Status, "steep-water")
        assert isinstance(offline, Status) and offline.state == "offline"
        assert "hub-a" in offline.reason and "stopped answering" in offline.reason
        assert time.monotonic() - started < 6.0
        with pytest.raises(CommandError) as refused:
            await client.command("kiln-air", "get_setpoint")
        assert refused.value.code == ErrorCode.INSTRUMENT_OFFLINE
        await steep.close()
    agent.kill()


def test_a_bus_that_cannot_be_reached_is_named(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = tmp_path / "hub.toml"
    config.write_text(f'bus = "nats://127.0.0.1:{free_port()}"\n')
    args = ["hub", "--config", str(config), "--port", str(port), "--data", str(tmp_path / "data")]
    done = subprocess.run(
        [sys.executable, "-m", "kleinmaelzung.cli", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode != 0
    assert "bus: cannot reach the NATS server at nats://127.0.0.1:" in done.stderr
