"""The serial line driver's identify probe: the port must hold the instrument the profile is for.

A port path names a socket, not an instrument; after a replug something else
may answer there (issue 8, item 6).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.agent import Agent, AgentConfig, InstrumentConfig, PortError
from kleinmaelzung.agent.drivers import serial_line
from kleinmaelzung.agent.drivers.serial_line import SerialLineDriver, load_profile
from kleinmaelzung.hub import RunningHub
from kleinmaelzung.protocol import Timeouts
from kleinmaelzung.sim import Simulator

from ..hub.peers import raw_client
from .test_agent import link, open_fds

DEADLINE_S = 15.0
KILN_PROFILE = Path(serial_line.__file__).parent / "profiles" / "kmz-kiln.toml"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(["kiln-air"], seed=8) as simulator:
        yield simulator


@pytest.fixture
async def agent(hub: RunningHub, sim: Simulator, tmp_path: Path) -> AsyncIterator[Agent]:
    config = AgentConfig(
        hub=hub.url,
        agent_id="test-pi",
        instruments=[
            InstrumentConfig(
                id="kiln-air",
                profile="kmz-kiln",
                port=link(tmp_path, "kiln", sim.paths["kiln-air"]),
                poll_interval_s=0.05,
                reply_timeout_s=0.3,
            )
        ],
    )
    running = Agent(config, timeouts=Timeouts(reconnect_max_s=0.5))
    task = asyncio.create_task(running.run())
    await asyncio.wait_for(running.link.connected.wait(), DEADLINE_S)
    yield running
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _status(client: Any, state: str, containing: str, data: list[dict[str, Any]]) -> str:
    """The reason of the first status in `state` whose reason contains `containing`;
    kiln-air samples that arrive meanwhile are appended to `data`."""
    async with asyncio.timeout(DEADLINE_S):  # samples keep coming: bound the whole wait
        while True:
            message = await client.receive(timeout=DEADLINE_S)
            reason = str(message.get("reason") or "")
            if message["type"] == "data":
                data += [s for s in message["samples"] if s["instrument"] == "kiln-air"]
            elif message["type"] == "status" and message["state"] == state and containing in reason:
                return reason


async def test_another_instrument_on_the_port_is_refused_until_the_right_one_is_back(
    hub: RunningHub, agent: Agent, sim: Simulator, tmp_path: Path
) -> None:
    async with raw_client(hub.url) as client:
        await client.send({"type": "subscribe", "id": "s", "patterns": ["kiln-air"]})
        await client.receive_type("subscribed")
        await client.receive_type("data", timeout=DEADLINE_S)  # the kiln is online
        sim.unplug("kiln-air")
        await _status(client, "faulted", "", [])
        # Someone plugs the steeping tank's thermometer into the kiln's adapter.
        link(tmp_path, "kiln", sim.replug("kiln-air", as_kind="thermometer"))
        meanwhile: list[dict[str, Any]] = []
        reason = await _status(client, "faulted", "wrong instrument", meanwhile)
        assert "'Kleinmaelzung,T-10," in reason, reason
        assert "expected '^Kleinmaelzung,KC-300,'" in reason, reason
        # Refused on every retry, not just once: wait for the runner to try again.
        runner = agent.runners["kiln-air"]
        tries = runner.fault_count
        async with asyncio.timeout(DEADLINE_S):
            while runner.fault_count <= tries:  # noqa: ASYNC110 - no event exists for it
                await asyncio.sleep(0.02)
        assert runner.state == "faulted"
        assert "T-10" in runner.reason
        # The kiln goes back in: online again, and its readings resume.
        link(tmp_path, "kiln", sim.replug("kiln-air", as_kind="kiln-controller"))
        await _status(client, "online", "", meanwhile)
        assert meanwhile == [], "samples were delivered while the thermometer was plugged in"
        data = await client.receive_type("data", timeout=DEADLINE_S)
        sample = data["samples"][0]
        assert sample["instrument"] == "kiln-air"
        assert set(sample["values"]) == {"temperature", "setpoint", "output"}


def _kiln(port: str, profile: str = "kmz-kiln") -> SerialLineDriver:
    return SerialLineDriver(
        InstrumentConfig(id="kiln-air", profile=profile, port=port, reply_timeout_s=0.3)
    )


async def test_no_answer_to_the_identify_query_is_a_port_error_and_leaves_the_port_closed(
    sim: Simulator,
) -> None:
    path = sim.paths["kiln-air"]
    before = open_fds(path)  # the simulator keeps the slave side open too
    sim.set_silent("kiln-air", True)
    driver = _kiln(path)
    with pytest.raises(
        PortError, match=r"did not answer the identify query '\*IDN\?' within 0.3 s"
    ):
        await driver.open()
    assert open_fds(path) == before
    sim.set_silent("kiln-air", False)
    await driver.open()  # it answers again: the next open succeeds
    try:
        assert "setpoint" in await driver.read()
    finally:
        await driver.close()


async def test_a_profile_without_identity_skips_the_probe(sim: Simulator, tmp_path: Path) -> None:
    text = KILN_PROFILE.read_text(encoding="utf-8")
    profile = tmp_path / "third-party.toml"
    profile.write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("identity")),
        encoding="utf-8",
    )
    assert load_profile(str(profile)).identity == ""
    sim.unplug("kiln-air")
    thermometer = sim.replug("kiln-air", as_kind="thermometer")
    driver = _kiln(thermometer, str(profile))
    await driver.open()  # no identity to check: whatever is there is opened
    await driver.close()
    with pytest.raises(PortError, match="wrong instrument"):
        await _kiln(thermometer).open()


def test_identity_without_identify_is_a_profile_error(tmp_path: Path) -> None:
    profile = tmp_path / "broken.toml"
    profile.write_text(
        KILN_PROFILE.read_text(encoding="utf-8").replace('identify = "*IDN?"', ""), encoding="utf-8"
    )
    with pytest.raises(ValueError, match="identity needs identify"):
        load_profile(str(profile))


async def test_identity_is_what_the_probe_answered(sim: Simulator, tmp_path: Path) -> None:
    """`--check` shows it: None before the probe, the answer after, kept when refused."""
    driver = _kiln(sim.paths["kiln-air"])
    assert driver.identity is None
    await driver.open()
    await driver.close()
    assert driver.identity is not None
    assert driver.identity.startswith("Kleinmaelzung,KC-300,")
    sim.unplug("kiln-air")
    thermometer = sim.replug("kiln-air", as_kind="thermometer")
    refused = _kiln(thermometer)
    with pytest.raises(PortError, match="wrong instrument"):
        await refused.open()
    assert refused.identity is not None
    assert refused.identity.startswith("Kleinmaelzung,T-10,")
    sim.set_silent("kiln-air", True)
    with pytest.raises(PortError, match="did not answer"):
        await refused.open()
    assert refused.identity is None, "no answer this time: nothing to show"
    # A profile without identify has nothing to show.
    profile = tmp_path / "anonymous.toml"
    profile.write_text(
        "\n".join(
            line
            for line in KILN_PROFILE.read_text(encoding="utf-8").splitlines()
            if not line.startswith(("identity", "identify"))
        ),
        encoding="utf-8",
    )
    sim.set_silent("kiln-air", False)
    anonymous = _kiln(thermometer, str(profile))
    await anonymous.open()
    await anonymous.close()
    assert anonymous.identity is None
