"""`kmz agent --check`'s logic: each instrument opened and read once, against simulated ones."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.agent import AgentConfig, InstrumentConfig
from kleinmaelzung.agent.check import (
    CheckResult,
    check_instrument,
    check_instruments,
    format_table,
    identity_of,
    where_of,
)
from kleinmaelzung.agent.drivers import BlockingDriver
from kleinmaelzung.agent.drivers.i2c import I2cDriver
from kleinmaelzung.agent.ports import by_id_links, usb_identity
from kleinmaelzung.protocol import Channel, InstrumentInfo, Value
from kleinmaelzung.sim import Simulator
from kleinmaelzung.sim import i2c as sim_i2c
from kleinmaelzung.sim import visa as sim_visa
from kleinmaelzung.sim.modbus import KilnModbusServer


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(["kiln-air"], seed=3) as simulator:
        yield simulator


def kiln(port: str) -> InstrumentConfig:
    return InstrumentConfig(id="kiln-air", profile="kmz-kiln", port=port, reply_timeout_s=0.5)


class _Broken:
    """A driver with a bug: its read raises what no driver should."""

    closed = False

    def __init__(self, config: InstrumentConfig) -> None:
        self.config = config

    @staticmethod
    def check_config(config: InstrumentConfig) -> None:
        pass

    def info(self) -> InstrumentInfo:
        return InstrumentInfo(id=self.config.id, kind="broken", channels=[Channel(name="x")])

    async def open(self) -> None:
        pass

    async def read(self) -> dict[str, Value]:
        raise KeyError("x")

    async def execute(self, name: str, args: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        type(self).closed = True


class _Hanging(_Broken):
    """A driver whose read never returns (a library blocked on a dead line)."""

    async def read(self) -> dict[str, Value]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_good_instrument_gives_a_reading_with_units(sim: Simulator) -> None:
    result = await check_instrument(kiln(sim.paths["kiln-air"]))

    assert result.ok, result.error
    assert result.where == sim.paths["kiln-air"]
    assert set(result.values) == {"temperature", "setpoint", "output"}
    assert result.units["temperature"] == "°C"
    assert "temperature=" in result.describe_reading()
    assert " °C" in result.describe_reading()


async def test_a_missing_port_is_that_instruments_error_and_the_others_are_still_checked(
    sim: Simulator, tmp_path: Path
) -> None:
    missing = str(tmp_path / "ttyUSB9")
    config = AgentConfig(
        hub="http://127.0.0.1:1",
        agent_id="pi",
        instruments=[
            InstrumentConfig(id="balance", profile="mt-sics-balance", port=missing),
            kiln(sim.paths["kiln-air"]),
        ],
    )

    results = await check_instruments(config)

    assert [r.instrument for r in results] == ["balance", "kiln-air"]
    assert not results[0].ok
    assert results[0].error is not None and missing in results[0].error
    assert results[0].describe_reading().startswith("error: ")
    assert results[1].ok


async def test_a_driver_bug_is_a_result_naming_the_exception_and_the_driver_is_closed() -> None:
    _Broken.closed = False
    result = await check_instrument(InstrumentConfig(id="odd", driver="odd"), driver_class=_Broken)

    assert result == CheckResult("odd", "odd", "", error="KeyError: 'x'")
    assert _Broken.closed


async def test_a_hanging_driver_gives_up_at_the_deadline() -> None:
    _Hanging.closed = False
    result = await asyncio.wait_for(
        check_instrument(
            InstrumentConfig(id="stuck", driver="odd"), driver_class=_Hanging, timeout_s=0.2
        ),
        5.0,
    )

    assert result.error == "no answer within 0.2 s"
    assert _Hanging.closed


class _BlockedInLibrary(BlockingDriver):
    """A driver over a blocking library whose call does not come back until released."""

    release = threading.Event()

    def info(self) -> InstrumentInfo:
        return InstrumentInfo(id=self.config.id, kind="blocked", channels=[])

    def open_blocking(self) -> None:
        self.release.wait(10.0)


async def test_a_blocking_library_call_that_hangs_does_not_hold_the_check() -> None:
    _BlockedInLibrary.release.clear()
    try:
        result = await asyncio.wait_for(
            check_instrument(
                InstrumentConfig(id="blocked", driver="odd"),
                driver_class=_BlockedInLibrary,
                timeout_s=0.2,
            ),
            5.0,
        )
    finally:
        _BlockedInLibrary.release.set()  # let the bus thread end

    assert result.error == "no answer within 0.2 s"


async def test_a_silent_instrument_is_no_answer(sim: Simulator) -> None:
    sim.set_silent("kiln-air", True)

    result = await check_instrument(kiln(sim.paths["kiln-air"]), timeout_s=3.0)

    assert not result.ok
    assert result.error is not None


@pytest.mark.parametrize(
    ("config", "where"),
    [
        (InstrumentConfig(id="a", port="/dev/ttyUSB0"), "/dev/ttyUSB0"),
        (
            InstrumentConfig(id="a", driver="visa", settings={"resource": "TCPIP::h::INSTR"}),
            "TCPIP::h::INSTR",
        ),
        (
            InstrumentConfig(id="a", driver="modbus", settings={"host": "10.0.0.2", "port": 502}),
            "10.0.0.2:502",
        ),
        (
            InstrumentConfig(id="a", driver="modbus", settings={"serial_port": "/dev/ttyS1"}),
            "/dev/ttyS1",
        ),
        (InstrumentConfig(id="a", driver="i2c", settings={"bus": 1}), "/dev/i2c-1"),
        (InstrumentConfig(id="a", driver="i2c", settings={"bus": "/dev/i2c-3"}), "/dev/i2c-3"),
        (InstrumentConfig(id="a", driver="odd", bus="rs485-a"), "rs485-a"),
        (InstrumentConfig(id="a", driver="odd"), ""),
    ],
)
def test_where_an_instrument_is_comes_from_its_config(config: InstrumentConfig, where: str) -> None:
    assert where_of(config) == where


# --- the identity answered ---------------------------------------------------


async def test_the_identity_each_instrument_answered() -> None:
    dmm = InstrumentConfig(
        id="bench-dmm",
        driver="visa",
        settings={
            "resource": sim_visa.MULTIMETER,
            "profile": "scpi-dmm",
            "backend": sim_visa.backend(),
        },
    )
    sensor = InstrumentConfig(
        id="germ-air", driver="i2c", settings={"sensor": "bme280", "simulated": True}
    )
    async with KilnModbusServer(units=(1,)) as kiln:
        controller = InstrumentConfig(
            id="kiln",
            driver="modbus",
            settings={"host": "127.0.0.1", "port": kiln.port, "map": "kmz-kiln-modbus"},
        )
        results = [await check_instrument(c) for c in (dmm, sensor, controller)]

    assert [r.error for r in results] == [None, None, None]
    assert [r.identity for r in results] == [
        "KLEINMAELZUNG,KMZ-DMM-1,DEMO0001,1.0",  # its *IDN? answer
        "bme280 (chip id 0x60)",
        None,  # a Modbus register map has nothing that says what the device is
    ]
    lines = format_table(results).splitlines()
    assert lines[0].split() == ["INSTRUMENT", "DRIVER", "PORT/RESOURCE", "IDENTITY", "READING"]
    column = lines[0].index("IDENTITY")
    assert [line[column:].split("  ")[0] for line in lines[1:]] == [
        "KLEINMAELZUNG,KMZ-DMM-1,DEMO0001,1.0",
        "bme280 (chip id 0x60)",
        "-",
    ]
    assert "voltage_dc=" in lines[1] and "pressure=" in lines[2] and "setpoint=" in lines[3]


async def test_the_identity_is_shown_when_the_reading_then_fails() -> None:
    # The sensor that answered is the right one; its measurement is what fails.
    config = InstrumentConfig(
        id="germ-air", driver="i2c", settings={"sensor": "sht3x", "simulated": True}
    )

    result = await check_instrument(config, driver_class=_CorruptedSht3x)

    assert result.identity == "sht3x"
    assert result.error is not None and "CRC mismatch" in result.error


class _CorruptedSht3x(I2cDriver):
    """A simulated SHT3x whose measurements come with a bad CRC once it is open."""

    def open_blocking(self) -> None:
        super().open_blocking()
        assert self.simulator is not None
        device = self.simulator.devices[0x44]
        assert isinstance(device, sim_i2c.Sht3x)
        device.corrupt_crc = True


class _OddIdentity(_Broken):
    """A driver whose identity attribute itself is broken."""

    @property
    def identity(self) -> str:
        raise RuntimeError("bug")


def test_a_driver_without_identity_or_with_a_broken_one_has_none() -> None:
    config = InstrumentConfig(id="odd", driver="odd")
    assert identity_of(_Broken(config)) is None
    assert identity_of(_OddIdentity(config)) is None
    table = format_table([CheckResult("odd", "odd", "", error="KeyError: 'x'")])
    assert table.splitlines()[1].split() == ["odd", "odd", "-", "-", "error:", "KeyError:", "'x'"]


def test_by_id_links_map_each_device_to_its_stable_link(tmp_path: Path) -> None:
    device = tmp_path / "ttyUSB0"
    device.touch()
    folder = tmp_path / "by-id"
    folder.mkdir()
    link = folder / "usb-FTDI_FT232R_USB_UART_A10K3XYZ-if00-port0"
    os.symlink("../ttyUSB0", link)

    assert by_id_links(folder) == {os.path.realpath(device): str(link)}
    assert by_id_links(tmp_path / "absent") == {}


def test_usb_identity_is_vid_pid_and_serial_in_hex() -> None:
    assert usb_identity(0x0403, 0x6001, "A10K3XYZ") == "0403:6001:A10K3XYZ"
    assert usb_identity(0x2341, 0x43, None) == "2341:0043"
    assert usb_identity(None, None, None) == ""
