"""Naming a serial instrument by what stays with its adapter (issue 8, item 6).

`/dev/ttyUSB0` goes to whichever adapter the kernel saw first. A by-id link
and the USB VID:PID:serial stay with the adapter. This machine has no USB, so
the matching is tested over pyserial's own `ListPortInfo` objects, and the
link over a real symlink to a pty, re-pointed after a replug as udev would.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from serial.tools.list_ports import comports
from serial.tools.list_ports_common import ListPortInfo

from kleinmaelzung.agent import InstrumentConfig, PortError
from kleinmaelzung.agent.drivers.serial_line import SerialLineDriver
from kleinmaelzung.agent.ports import SerialPort, UsbIdentity, find_usb_port
from kleinmaelzung.sim import Simulator

from .test_agent import link


def port(
    device: str, vid: int | None = None, pid: int | None = None, serial: str = ""
) -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number = vid, pid, serial or None
    return info


PORTS = [
    port("/dev/ttyAMA0"),  # the Pi's own UART: no USB ids
    port("/dev/ttyUSB0", 0x0403, 0x6001, "A50285BI"),
    port("/dev/ttyUSB1", 0x0403, 0x6001, "B7731XQ2"),
    port("/dev/ttyACM0", 0x2341, 0x0043, "75833353035351A0E1C1"),
]


@pytest.mark.parametrize(
    ("wanted", "device"),
    [
        ("0403:6001:A50285BI", "/dev/ttyUSB0"),
        ("0403:6001:b7731xq2", "/dev/ttyUSB1"),  # serial numbers compare ignoring case
        ("2341:0043", "/dev/ttyACM0"),  # the only one of its kind: no serial needed
    ],
)
def test_usb_ids_find_the_one_port(wanted: str, device: str) -> None:
    assert find_usb_port(UsbIdentity.parse(wanted), PORTS) == device


def test_no_match_says_what_was_looked_for_and_which_usb_ports_exist() -> None:
    with pytest.raises(PortError) as info:
        find_usb_port(UsbIdentity.parse("067B:2303"), PORTS)
    assert str(info.value) == (
        "no USB serial adapter 067B:2303 is plugged in; USB serial ports:"
        " /dev/ttyACM0 (2341:0043:75833353035351A0E1C1), /dev/ttyUSB0 (0403:6001:A50285BI),"
        " /dev/ttyUSB1 (0403:6001:B7731XQ2)"
    )
    with pytest.raises(PortError, match=r"USB serial ports: none$"):
        find_usb_port(UsbIdentity.parse("067B:2303"), [port("/dev/ttyAMA0")])


def test_several_matches_are_named_and_the_serial_number_asked_for() -> None:
    with pytest.raises(PortError) as info:
        find_usb_port(UsbIdentity.parse("0403:6001"), PORTS)
    assert str(info.value) == (
        "2 USB serial ports match 0403:6001: /dev/ttyUSB0 (0403:6001:A50285BI),"
        ' /dev/ttyUSB1 (0403:6001:B7731XQ2); add its serial number ("VID:PID:SERIAL") to say which'
    )
    quad = [port(f"/dev/ttyUSB{i}", 0x0403, 0x6011, "FT4X") for i in range(4)]
    with pytest.raises(PortError, match=r"4 USB serial ports match .*/by-id/\.\.\. path instead"):
        find_usb_port(UsbIdentity.parse("0403:6011:FT4X"), quad)


@pytest.mark.parametrize("text", ["0403", "0403:60010", "ftdi:6001", "0403-6001", ""])
def test_a_malformed_usb_identity_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape('expected "VID:PID" or "VID:PID:SERIAL"')):
        UsbIdentity.parse(text)


async def test_this_machine_lists_no_usb_port_and_a_usb_instrument_says_so() -> None:
    """Through pyserial's real listing: here there is no USB, so nothing matches."""
    if any(info.vid is not None for info in comports()):
        pytest.skip("this machine has USB serial adapters")
    config = InstrumentConfig(
        id="balance", profile="mt-sics-balance", settings={"usb": "0403:6001"}
    )
    SerialLineDriver.check_config(config)
    driver = SerialLineDriver(config)
    with pytest.raises(PortError, match=r"^no USB serial adapter 0403:6001 is plugged in"):
        await driver.open()


@pytest.mark.parametrize(
    ("port_path", "settings", "key", "says"),
    [
        ("", {}, "port", "needs a port such as"),
        ("/dev/ttyUSB0", {"usb": "0403:6001"}, "settings.usb", "either port or settings.usb"),
        ("", {"usb": "0403"}, "settings.usb", 'expected "VID:PID" or "VID:PID:SERIAL"'),
        ("/dev/ttyUSB0", {"identity": "("}, "settings.identity", "bad regular expression"),
    ],
)
def test_exactly_one_of_port_and_usb(
    port_path: str, settings: dict[str, object], key: str, says: str
) -> None:
    config = InstrumentConfig(
        id="balance", profile="mt-sics-balance", port=port_path, settings=settings
    )
    with pytest.raises(ValueError, match=re.escape(says)) as info:
        SerialLineDriver.check_config(config)
    assert getattr(info.value, "key", None) == key


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(["kiln-air"], seed=2) as simulator:
        yield simulator


async def test_a_by_id_link_is_followed_again_on_every_reopen(
    sim: Simulator, tmp_path: Path
) -> None:
    by_id = link(tmp_path, "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0", sim.paths["kiln-air"])
    driver = SerialLineDriver(
        InstrumentConfig(id="kiln-air", profile="kmz-kiln", port=by_id, reply_timeout_s=0.3)
    )
    await driver.open()
    try:
        assert "temperature" in await driver.read()
        sim.unplug("kiln-air")
        with pytest.raises(PortError):
            await driver.read()
        await driver.close()
        # udev removes the link while the adapter is out...
        os.remove(by_id)
        with pytest.raises(
            PortError,
            match=r"cannot open .*-if00-port0: No such file or directory \(is it plugged in\?\)",
        ):
            await driver.open()
        # ...and makes it again, to wherever the adapter came back.
        second = sim.replug("kiln-air")
        link(tmp_path, Path(by_id).name, second)
        await driver.open()
        assert driver.device == by_id
        assert "temperature" in await driver.read()
        assert driver.identity is not None
        assert driver.identity.startswith("Kleinmaelzung,KC-300,")
    finally:
        await driver.close()


def test_kmz_ports_says_what_to_put_in_the_config() -> None:
    def listed(by_id: str = "", usb: str = "") -> str:
        return SerialPort("/dev/ttyUSB0", by_id, usb, "FT232R").config_line

    assert listed(by_id="/dev/serial/by-id/usb-FTDI-if00-port0", usb="0403:6001:A5") == (
        'port = "/dev/serial/by-id/usb-FTDI-if00-port0"'
    )
    assert listed(usb="0403:6001:A5") == 'usb = "0403:6001:A5" in [instruments.settings]'
    assert listed() == 'port = "/dev/ttyUSB0"'
