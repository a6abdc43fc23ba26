"""The bus interface a sensor talks through, and what every sensor offers the driver."""

from __future__ import annotations

from typing import Any, Protocol

from ....protocol import Channel, CommandSpec, Value


class I2cBus(Protocol):
    """The few calls a sensor needs; smbus2 (`i2c.SMBusLine`) and `sim.i2c.SimulatedBus` have them.

    Failures are `OSError`s, as the kernel reports them: a device that does
    not acknowledge its address is `EREMOTEIO` (or `ENXIO`, `EIO`).
    """

    def write(self, address: int, data: bytes) -> None:
        """Write `data` to the device at the 7-bit `address`."""
        ...

    def read(self, address: int, length: int) -> bytes:
        """Read `length` bytes from the device."""
        ...

    def write_read(self, address: int, data: bytes, length: int) -> bytes:
        """Write `data`, then read `length` bytes after a repeated start (a register read)."""
        ...

    def close(self) -> None:
        """Release the bus; idempotent."""
        ...


class Sensor:
    """One kind of sensor at one address: probe it, measure, run its commands.

    Methods run in the bus thread and may raise `OSError` (the driver maps
    it), `PortError` (the wrong device answered) or `InstrumentError`.
    """

    kind = ""
    channels: tuple[Channel, ...] = ()
    commands: tuple[CommandSpec, ...] = ()

    def __init__(self, address: int, where: str) -> None:
        self.address = address
        #: "/dev/i2c-1@0x44", for messages.
        self.where = where

    def probe(self, line: I2cBus) -> None:
        """Check that this kind of sensor answers at the address (read what it needs once)."""
        raise NotImplementedError

    def measure(self, line: I2cBus) -> dict[str, Value]:
        """One measurement, in the channels' units."""
        raise NotImplementedError

    def execute(self, line: I2cBus, name: str, args: dict[str, Any]) -> Any:
        """Run a command of `commands` (arguments already checked)."""
        raise NotImplementedError(name)
