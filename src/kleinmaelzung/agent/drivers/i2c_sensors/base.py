"""The bus interface a sensor talks through: smbus2 on a Pi, the simulator elsewhere."""

from __future__ import annotations

from typing import Protocol


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
