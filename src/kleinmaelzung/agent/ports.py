"""`kmz ports`: the serial ports of this machine, with the names that survive a reboot.

`/dev/ttyUSB0` goes to whichever adapter the kernel saw first; the
`/dev/serial/by-id/...` link and the USB VID:PID:serial stay with the
adapter, so those are what a config should name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import PortError

if TYPE_CHECKING:
    from serial.tools.list_ports_common import ListPortInfo

#: Where udev keeps one stable link per USB serial adapter (Linux).
BY_ID_FOLDER = Path("/dev/serial/by-id")


@dataclass(frozen=True)
class SerialPort:
    """One serial port as the operating system lists it."""

    device: str
    #: The /dev/serial/by-id/... link to this device, "" if there is none.
    by_id: str
    #: "VID:PID:SERIAL" in hex (serial left out when the adapter has none), "" if not USB.
    usb: str
    description: str

    def to_json(self) -> dict[str, str]:
        """The port as a JSON object."""
        return asdict(self)

    @property
    def config_line(self) -> str:
        """What an instrument's config should say to find this port again after a reboot.

        The by-id link if udev made one; else the adapter's USB ids (in
        `[instruments.settings]`); else the device itself (a Pi's own UART,
        which does not move).
        """
        if self.by_id:
            return f'port = "{self.by_id}"'
        if self.usb:
            # Without a serial number, VID:PID finds it while it is the only one of its kind.
            return f'usb = "{self.usb}" in [instruments.settings]'
        return f'port = "{self.device}"'


def usb_identity(vid: int | None, pid: int | None, serial_number: str | None) -> str:
    """A USB adapter's "VID:PID[:SERIAL]", as a config's `usb` key matches it; "" if not USB."""
    if vid is None or pid is None:
        return ""
    text = f"{vid:04X}:{pid:04X}"
    return f"{text}:{serial_number}" if serial_number else text


_USB_IDENTITY = re.compile(r"^(?P<vid>[0-9A-Fa-f]{4}):(?P<pid>[0-9A-Fa-f]{4})(?::(?P<serial>.+))?$")


@dataclass(frozen=True)
class UsbIdentity:
    """A USB serial adapter as a config names it: vendor and product id, perhaps its serial."""

    vid: int
    pid: int
    serial_number: str | None = None

    @classmethod
    def parse(cls, text: str) -> UsbIdentity:
        """Read "VID:PID" or "VID:PID:SERIAL" (hex ids); ValueError says what was expected."""
        match = _USB_IDENTITY.match(text.strip())
        if match is None:
            raise ValueError(
                f'expected "VID:PID" or "VID:PID:SERIAL" in hex, such as "0403:6001:A50285BI"'
                f" (kmz ports lists them), got {text!r}"
            )
        return cls(int(match["vid"], 16), int(match["pid"], 16), match["serial"])

    def __str__(self) -> str:
        return usb_identity(self.vid, self.pid, self.serial_number)

    def matches(self, port: ListPortInfo) -> bool:
        """Whether `port` is on such an adapter; serial numbers compare ignoring case."""
        if (port.vid, port.pid) != (self.vid, self.pid):
            return False
        if self.serial_number is None:
            return True
        return (port.serial_number or "").casefold() == self.serial_number.casefold()


def find_usb_port(wanted: UsbIdentity, ports: Iterable[ListPortInfo] | None = None) -> str:
    """The device path of the one port on the adapter `wanted` names; PortError otherwise.

    `ports` defaults to what pyserial lists now. Asked on every (re)open: the
    adapter keeps its ids when it comes back as another /dev/ttyUSBn.
    """
    if ports is None:
        from serial.tools.list_ports import comports

        ports = comports()
    listed = sorted(ports, key=lambda port: port.device)
    found = [port for port in listed if wanted.matches(port)]
    if len(found) == 1:
        return str(found[0].device)
    if not found:
        usb = [port for port in listed if port.vid is not None and port.pid is not None]
        there = ", ".join(_describe(port) for port in usb) or "none"
        raise PortError(f"no USB serial adapter {wanted} is plugged in; USB serial ports: {there}")
    named = ", ".join(_describe(port) for port in found)
    if wanted.serial_number is None:
        advice = 'add its serial number ("VID:PID:SERIAL") to say which'
    else:
        # One adapter, several ports (an FT4232H has four, one serial number).
        advice = "name the port by its /dev/serial/by-id/... path instead"
    raise PortError(f"{len(found)} USB serial ports match {wanted}: {named}; {advice}")


def _describe(port: ListPortInfo) -> str:
    identity = usb_identity(port.vid, port.pid, port.serial_number)
    return f"{port.device} ({identity})"


def by_id_links(folder: Path = BY_ID_FOLDER) -> dict[str, str]:
    """{real device path: by-id link} for each link in `folder`; empty if there is no folder."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return {}
    links: dict[str, str] = {}
    for name in names:
        link = folder / name
        # setdefault: of two links to one device (rare), the first by name is shown.
        links.setdefault(os.path.realpath(link), str(link))
    return links


def list_serial_ports(by_id_folder: Path = BY_ID_FOLDER) -> list[SerialPort]:
    """The serial ports pyserial finds, sorted by device, with their by-id links and USB ids."""
    # Lazily: pyserial comes with the agent extra, and `kmz` itself must start without it.
    from serial.tools.list_ports import comports

    links = by_id_links(by_id_folder)
    ports = [
        SerialPort(
            device=info.device,
            by_id=links.get(os.path.realpath(info.device), ""),
            usb=usb_identity(info.vid, info.pid, info.serial_number),
            description="" if info.description in (None, "n/a") else info.description,
        )
        for info in comports()
    ]
    return sorted(ports, key=lambda port: port.device)
