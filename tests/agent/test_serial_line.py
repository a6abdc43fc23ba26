"""The serial line driver against simulated instruments on real pseudo-terminals."""

from __future__ import annotations

import asyncio
import re
import termios
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kleinmaelzung.agent import InstrumentConfig, InstrumentError, NoAnswer, PortError
from kleinmaelzung.agent.drivers import serial_line
from kleinmaelzung.agent.drivers.serial_line import SerialLineDriver
from kleinmaelzung.sim import Simulator

PROFILES = {
    "steep-water": "kmz-thermometer",
    "germ-chamber": "kmz-hygrometer",
    "kiln-air": "kmz-kiln",
    "balance": "mt-sics-balance",
}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=3) as simulator:
        yield simulator


def driver_for(sim: Simulator, instrument: str, **options: float) -> SerialLineDriver:
    return SerialLineDriver(
        InstrumentConfig(
            id=instrument, profile=PROFILES[instrument], port=sim.paths[instrument], **options
        )
    )


@pytest.fixture
async def kiln(sim: Simulator) -> AsyncIterator[SerialLineDriver]:
    driver = driver_for(sim, "kiln-air", reply_timeout_s=0.3)
    await driver.open()
    yield driver
    await driver.close()


async def test_every_profile_reads_sane_values(sim: Simulator) -> None:
    expected = {
        "steep-water": {"temperature": (10, 20)},
        "germ-chamber": {"temperature": (12, 20), "humidity": (85, 100)},
        "kiln-air": {"temperature": (20, 250), "setpoint": (0, 250), "output": (0, 100)},
        "balance": {"mass": (0, 100)},
    }
    for instrument, channels in expected.items():
        driver = driver_for(sim, instrument)
        await driver.open()
        try:
            values = await driver.read()
        finally:
            await driver.close()
        for channel, (low, high) in channels.items():
            assert low <= values[channel] <= high, (instrument, channel, values)  # type: ignore[operator]
    info = driver_for(sim, "balance").info()
    assert [(c.name, c.unit) for c in info.channels] == [("mass", "g"), ("stable", "")]
    assert {c.name for c in info.commands} == {"tare", "zero", "weigh_stable"}


async def test_balance_stable_flag_and_tare(sim: Simulator) -> None:
    driver = driver_for(sim, "balance")
    await driver.open()
    try:
        values = await driver.read()
        assert values["stable"] is True
        assert await driver.execute("tare", {}) == {"tare": pytest.approx(12.345, abs=0.01)}
        assert (await driver.read())["mass"] == pytest.approx(0.0, abs=0.01)
        sim.model("balance").place(20.0, asyncio.get_running_loop().time())  # type: ignore[attr-defined]
        # Placed "now" on the sim's monotonic clock: unstable, so tare is refused.
        with pytest.raises(InstrumentError, match="not stable"):
            await driver.execute("tare", {})
    finally:
        await driver.close()


async def test_kiln_setpoint_round_trip_and_refusal(kiln: SerialLineDriver) -> None:
    assert await kiln.execute("set_setpoint", {"value": 80.0}) == {"value": 80.0}
    assert await kiln.execute("get_setpoint", {}) == {"setpoint": 80.0}
    assert (await kiln.read())["setpoint"] == 80.0
    with pytest.raises(InstrumentError, match="out of range"):
        await kiln.execute("set_setpoint", {"value": 999.0})


async def test_silent_instrument_times_out_then_recovers(
    sim: Simulator, kiln: SerialLineDriver
) -> None:
    sim.set_silent("kiln-air", True)
    with pytest.raises(NoAnswer, match=r"no answer to 'MEAS\?' within 0.3 s"):
        await kiln.read()
    sim.set_silent("kiln-air", False)
    assert "temperature" in await kiln.read()


async def test_unplugged_port_is_reported_and_reopen_fails_clearly(sim: Simulator) -> None:
    driver = driver_for(sim, "kiln-air", reply_timeout_s=0.5)
    await driver.open()
    sim.unplug("kiln-air")
    with pytest.raises(PortError):
        await driver.read()
    await driver.close()
    with pytest.raises(PortError, match="cannot open"):
        await driver.open()


async def test_missing_port_is_a_port_error() -> None:
    driver = SerialLineDriver(
        InstrumentConfig(id="kiln-air", profile="kmz-kiln", port="/dev/does-not-exist")
    )
    with pytest.raises(PortError, match="cannot open /dev/does-not-exist"):
        await driver.open()


def test_a_profile_marks_its_dangerous_commands() -> None:
    info = SerialLineDriver(
        InstrumentConfig(id="kiln-air", profile="kmz-kiln", port="/dev/does-not-exist")
    ).info()
    flags = {c.name: c.dangerous for c in info.commands}
    assert flags == {"set_setpoint": True, "get_setpoint": False}


async def test_the_serial_frame_of_the_settings_reaches_the_port(sim: Simulator) -> None:
    """Two stop bits and hardware handshake: the port is set so, as the OS sees it.

    (Seven data bits and parity go the same way, but this machine's ptys
    refuse CS7 and PARENB with EINVAL, so they are not read back here.)
    """
    config = InstrumentConfig(
        id="kiln-air",
        profile="kmz-kiln",
        port=sim.paths["kiln-air"],
        settings={"stopbits": 2, "flow": "rtscts"},
    )
    driver = SerialLineDriver(config)
    await driver.open()
    try:
        port = driver._transport.get_extra_info("serial")  # type: ignore[union-attr]
        cflag = termios.tcgetattr(port.fileno())[2]
        assert cflag & termios.CSTOPB
        assert cflag & termios.CRTSCTS
        assert cflag & termios.CSIZE == termios.CS8
    finally:
        await driver.close()


@pytest.mark.parametrize(
    ("settings", "key", "message"),
    [
        ({"parity": "X"}, "settings.parity", "invalid enum value 'X'"),
        ({"stopbits": 3}, "settings.stopbits", "expected 1, 1.5 or 2, got 3"),
        ({"bytesize": 9}, "settings.bytesize", "invalid enum value 9"),
        ({"handshake": "rtscts"}, "settings.handshake", "unknown key (a typo?)"),
    ],
)
def test_a_wrong_serial_setting_names_the_key(
    settings: dict[str, object], key: str, message: str
) -> None:
    config = InstrumentConfig(
        id="kiln-air", profile="kmz-kiln", port="/dev/ttyUSB0", settings=settings
    )
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        SerialLineDriver.check_config(config)
    assert getattr(info.value, "key", None) == key


async def test_a_text_argument_that_is_not_ascii_is_refused_before_it_is_sent(
    sim: Simulator, tmp_path: Path
) -> None:
    shipped = Path(serial_line.__file__).parent / "profiles" / "kmz-kiln.toml"
    profile = tmp_path / "kiln-with-label.toml"
    profile.write_text(
        shipped.read_text(encoding="utf-8")
        + '\n[[commands]]\nname = "label"\nsend = "LBL {text}"\nexpect = "^OK$"\n'
        'args = [{ name = "text", type = "str" }]\n',
        encoding="utf-8",
    )
    driver = SerialLineDriver(
        InstrumentConfig(id="kiln-air", profile=str(profile), port=sim.paths["kiln-air"])
    )
    await driver.open()
    try:
        with pytest.raises(InstrumentError, match="only ASCII goes on the line"):
            await driver.execute("label", {"text": "Prüfung"})
        assert "temperature" in await driver.read()  # nothing half-sent in the way
    finally:
        await driver.close()
