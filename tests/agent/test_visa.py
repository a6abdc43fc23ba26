"""The VISA (SCPI) driver against pyvisa-sim instruments, and through an agent to a real hub."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.agent import Agent, AgentConfig, ConfigError, InstrumentConfig
from kleinmaelzung.agent.config import check_config
from kleinmaelzung.agent.drivers import InstrumentError, NoAnswer, PortError, SettingsError
from kleinmaelzung.agent.drivers.visa import VisaDriver, builtin_profiles, load_profile
from kleinmaelzung.hub import RunningHub
from kleinmaelzung.protocol import Timeouts
from kleinmaelzung.sim import Simulator
from kleinmaelzung.sim import visa as visa_sim

from ..hub.peers import raw_client

DEFINITIONS = Path(__file__).parent / "data" / "scpi-instruments.yaml"
SIM = f"{DEFINITIONS}@sim"
DMM = "TCPIP::dmm.lab::INSTR"
DEADLINE_S = 10.0


def visa_config(resource: str = DMM, **settings: Any) -> InstrumentConfig:
    return InstrumentConfig(
        id="bench-dmm",
        driver="visa",
        poll_interval_s=0.05,
        settings={
            "resource": resource,
            "backend": SIM,
            "profile": "scpi-dmm",
            "timeout_s": 0.3,
            **settings,
        },
    )


@pytest.fixture
async def dmm() -> AsyncIterator[VisaDriver]:
    driver = VisaDriver(visa_config())
    await driver.open()
    yield driver
    await driver.close()


async def test_open_checks_identity_and_reads_the_voltage(dmm: VisaDriver) -> None:
    assert dmm.identity == "KLEINMAELZUNG,KMZ-DMM-1,SIM0001,1.0"
    assert await dmm.read() == {"voltage_dc": pytest.approx(1.2345)}
    info = dmm.info()
    assert (info.kind, [(c.name, c.unit) for c in info.channels]) == (
        "multimeter",
        [("voltage_dc", "V")],
    )
    assert "configure_voltage_dc" in {c.name for c in info.commands}


async def test_usb_resource_reaches_the_same_meter() -> None:
    driver = VisaDriver(visa_config("USB0::0x2A8D::0x1301::MY12345::INSTR"))
    await driver.open()
    try:
        assert (await driver.read())["voltage_dc"] == pytest.approx(1.2345)
    finally:
        await driver.close()


async def test_command_sets_the_range_and_a_query_command_reads_it_back(dmm: VisaDriver) -> None:
    assert await dmm.execute("configure_voltage_dc", {"range": 100.0}) == {"range": 100.0}
    assert await dmm.execute("get_range", {}) == {"range": 100.0}
    assert await dmm.execute("measure_voltage_ac", {}) == {"voltage_ac": 230.0}


async def test_a_value_the_meter_refuses_is_its_error_from_the_error_queue(
    dmm: VisaDriver,
) -> None:
    with pytest.raises(InstrumentError, match=r'-113,"Undefined header"'):
        await dmm.execute("configure_voltage_dc", {"range": 7.0})
    # The queue was read empty: the next command succeeds.
    assert await dmm.execute("configure_voltage_dc", {"range": 10.0}) == {"range": 10.0}
    assert (await dmm.read())["voltage_dc"] == pytest.approx(1.2345)


@pytest.fixture
def odd_profile(tmp_path: Path) -> Path:
    """The shipped DMM profile with a channel query these meters do not know."""
    shipped = resources.files("kleinmaelzung.agent.drivers").joinpath("scpi_profiles")
    text = shipped.joinpath("scpi-dmm.toml").read_text(encoding="utf-8")
    profile = tmp_path / "odd.toml"
    profile.write_text(text.replace('"MEAS:VOLT:DC?"', '"MEAS:FREQ?"'), encoding="utf-8")
    return profile


async def test_a_query_the_meter_does_not_know_names_its_error_not_a_timeout(
    odd_profile: Path,
) -> None:
    driver = VisaDriver(visa_config(profile=str(odd_profile)))
    await driver.open()
    try:
        with pytest.raises(InstrumentError, match=r"'MEAS:FREQ\?'.*Undefined header"):
            await driver.read()
    finally:
        await driver.close()


async def test_an_error_answer_in_place_of_a_value_is_an_instrument_error(
    odd_profile: Path,
) -> None:
    # The chatty meter answers what it does not know with "ERROR"; the profile says so.
    chatty = odd_profile.with_name("chatty.toml")
    text = odd_profile.read_text(encoding="utf-8")  # noqa: ASYNC240 (a small local file)
    chatty.write_text("error = '^ERROR'\n" + text, "utf-8")
    driver = VisaDriver(visa_config("TCPIP::chatty.lab::INSTR", profile=str(chatty)))
    await driver.open()
    try:
        with pytest.raises(InstrumentError, match=r"'MEAS:FREQ\?': instrument answered 'ERROR'"):
            await driver.read()
    finally:
        await driver.close()


async def test_silence_with_an_empty_error_queue_is_no_answer(odd_profile: Path) -> None:
    driver = VisaDriver(visa_config("TCPIP::mute.lab::INSTR", profile=str(odd_profile)))
    await driver.open()
    try:
        with pytest.raises(NoAnswer, match=r"no answer to 'MEAS:FREQ\?'"):
            await driver.read()
    finally:
        await driver.close()


@pytest.mark.parametrize(
    ("resource", "settings", "answered"),
    [
        ("TCPIP::legacy.lab::INSTR", {}, "LSG Serial #1234"),
        ("TCPIP::psu.lab::INSTR", {"identity": "KMZ-DMM-1"}, "KMZ-PSU-2"),
    ],
)
async def test_a_different_instrument_is_refused_naming_what_answered(
    resource: str, settings: dict[str, str], answered: str
) -> None:
    driver = VisaDriver(visa_config(resource, **settings))
    with pytest.raises(PortError, match=f"wrong instrument: .*{answered}"):
        await driver.open()
    with pytest.raises(PortError, match="not open"):
        await driver.read()
    await driver.close()


async def test_pinned_identity_accepts_the_right_meter() -> None:
    driver = VisaDriver(visa_config(identity="SIM0001"))
    await driver.open()
    await driver.close()
    await driver.close()  # idempotent


# pyvisa-sim "opens" an unknown resource and reads an empty, unterminated answer.
@pytest.mark.filterwarnings("ignore:read string doesn't end with termination characters")
async def test_nothing_at_the_resource_is_a_port_error() -> None:
    driver = VisaDriver(visa_config("TCPIP::nowhere.lab::INSTR"))
    with pytest.raises(PortError, match=r"nowhere.lab::INSTR: nothing answered \*IDN\?"):
        await driver.open()
    missing = VisaDriver(visa_config(backend="/no/such/defs.yaml@sim"))
    with pytest.raises(PortError, match=r"VISA backend .*No such file.*'/no/such/defs.yaml'"):
        await missing.open()
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = VisaDriver(visa_config(f"TCPIP::127.0.0.1::{port}::SOCKET", backend="@py"))
    with pytest.raises(PortError, match=rf"127.0.0.1::{port}::SOCKET: .*refused"):
        await refused.open()


@pytest.mark.parametrize(
    ("settings", "key", "says"),
    [
        ({"resource": "bogus"}, "settings.resource", "expected a VISA resource string"),
        ({"profile": "no-such-meter"}, "settings.profile", "built in: scpi-dmm"),
        ({"timeout_s": -1}, "settings.timeout_s", ">= 0|> 0"),
        ({"timeout": 1}, "settings.timeout", "unknown key"),
        ({"identity": "("}, "settings.identity", "bad regular expression"),
        ({"baud_rate": 9600}, "settings.baud_rate", "only serial"),
    ],
)
def test_settings_errors_name_the_key(settings: dict[str, Any], key: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says) as caught:
        VisaDriver.check_config(visa_config(**settings))
    assert caught.value.key == key


def test_a_config_names_file_instrument_and_key() -> None:
    config = AgentConfig(
        hub="http://127.0.0.1:1",
        agent_id="pi",
        instruments=[visa_config(resource="bogus")],
    )
    with pytest.raises(ConfigError, match=r"^agent.toml: instruments\[0\].settings.resource: "):
        check_config(config, source="agent.toml", drivers={"visa": VisaDriver})


def test_missing_resource_is_named() -> None:
    config = InstrumentConfig(id="dmm", driver="visa", settings={"profile": "scpi-dmm"})
    with pytest.raises(SettingsError, match="required key is missing") as caught:
        VisaDriver.check_config(config)
    assert caught.value.key == "settings.resource"


def test_shipped_profiles_load() -> None:
    assert "scpi-dmm" in builtin_profiles()
    for name in builtin_profiles():
        assert load_profile(name).channels


async def test_full_path_sample_and_command_through_the_hub(hub: RunningHub) -> None:
    config = AgentConfig(hub=hub.url, agent_id="bench-pi", instruments=[visa_config()])
    agent = Agent(config, timeouts=Timeouts(reconnect_max_s=0.5), drivers={"visa": VisaDriver})
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.link.connected.wait(), DEADLINE_S)
        async with raw_client(hub.url) as client:
            await client.send({"type": "subscribe", "id": "s", "patterns": ["bench-dmm"]})
            await client.receive_type("subscribed")
            data = await client.receive_type("data", timeout=DEADLINE_S)
            sample = data["samples"][0]
            assert sample["instrument"] == "bench-dmm"
            assert sample["values"]["voltage_dc"] == pytest.approx(1.2345)
            for id_, range_v in (("ok", 100), ("bad", 7)):
                await client.send(
                    {
                        "type": "command",
                        "id": id_,
                        "instrument": "bench-dmm",
                        "name": "configure_voltage_dc",
                        "args": {"range": range_v},
                    }
                )
                reply = await client.receive_type("reply", timeout=DEADLINE_S)
                assert reply["id"] == id_
                if id_ == "ok":
                    assert reply["ok"], reply
                    assert reply["result"] == {"range": 100}
                else:
                    assert (reply["ok"], reply["error"]["code"]) == (False, "instrument_error")
                    assert "Undefined header" in reply["error"]["message"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_reading_the_meter_refuses_faults_it_at_the_hub(
    hub: RunningHub, odd_profile: Path
) -> None:
    config = AgentConfig(
        hub=hub.url,
        agent_id="bench-pi",
        instruments=[visa_config(profile=str(odd_profile))],
    )
    agent = Agent(config, timeouts=Timeouts(reconnect_max_s=0.5), drivers={"visa": VisaDriver})
    task = asyncio.create_task(agent.run())
    try:
        async with raw_client(hub.url) as client:
            await client.send({"type": "subscribe", "id": "s", "patterns": ["bench-dmm"]})
            await client.receive_type("subscribed")
            while True:
                status = await client.receive_type("status", timeout=DEADLINE_S)
                if status["state"] == "faulted":
                    break
            assert "MEAS:FREQ?" in status["reason"]
            assert "Undefined header" in status["reason"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_demo_lab_multimeter_works_with_the_shipped_profile() -> None:
    config = InstrumentConfig(
        id="bench-dmm",
        driver="visa",
        settings={
            "resource": visa_sim.MULTIMETER,
            "backend": visa_sim.backend(),
            "profile": "scpi-dmm",
        },
    )
    driver = VisaDriver(config)
    await driver.open()
    try:
        readings = [(await driver.read())["voltage_dc"] for _ in range(3)]
        assert all(11.9 <= v <= 12.1 for v in readings), readings  # type: ignore[operator]
        assert await driver.execute("configure_voltage_dc", {"range": 10.0}) == {"range": 10.0}
        assert await driver.execute("get_range", {}) == {"range": 10.0}
    finally:
        await driver.close()


SERIAL_THERMOMETER = """
name = "kmz-t10-scpi"
kind = "thermometer"
read_termination = "\\n"
write_termination = "\\r\\n"
error_query = ""
error = '^ERR'

[identify]
expect = '^Kleinmaelzung,T-10,'

[[channels]]
name = "temperature"
query = "MEAS?"
unit = "°C"
"""


async def test_a_serial_resource_through_pyvisa_py_on_a_real_pty(tmp_path: Path) -> None:
    profile = tmp_path / "t10.toml"
    profile.write_text(SERIAL_THERMOMETER, encoding="utf-8")
    with Simulator(["steep-water"], seed=3) as sim:
        config = visa_config(
            f"ASRL{sim.paths['steep-water']}::INSTR",
            backend="@py",
            profile=str(profile),
            baud_rate=9600,
            timeout_s=1.0,
        )
        driver = VisaDriver(config)
        await driver.open()
        try:
            assert driver.identity.startswith("Kleinmaelzung,T-10,")
            assert 10 <= (await driver.read())["temperature"] <= 20  # type: ignore[operator]
        finally:
            await driver.close()
