"""`kmz agent --check`'s logic: each instrument opened and read once, against simulated ptys."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.agent import AgentConfig, InstrumentConfig
from kleinmaelzung.agent.check import CheckResult, check_instrument, check_instruments, where_of
from kleinmaelzung.agent.drivers import BlockingDriver
from kleinmaelzung.agent.ports import by_id_links, usb_identity
from kleinmaelzung.protocol import Channel, InstrumentInfo, Value
from kleinmaelzung.sim import Simulator


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
