"""`kmz ports`: the serial ports of this machine, with the names that survive a reboot.

`/dev/ttyUSB0` goes to whichever adapter the kernel saw first; the
`/dev/serial/by-id/...` link and the USB VID:PID:serial stay with the
adapter, so those are what a config should name.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

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


def usb_identity(vid: int | None, pid: int | None, serial_number: str | None) -> str:
    """A USB adapter's "VID:PID[:SERIAL]", as a config's `usb` key matches it; "" if not USB."""
    if vid is None or pid is None:
        return ""
    text = f"{vid:04X}:{pid:04X}"
    return f"{text}:{serial_number}" if serial_number else text


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
