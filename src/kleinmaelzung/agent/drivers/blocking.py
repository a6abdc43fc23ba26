"""A base for drivers over blocking libraries (PyVISA, smbus2): calls run in the bus thread."""

from __future__ import annotations

from typing import Any

from ...protocol import InstrumentInfo, Value
from ..buses import Bus
from ..config import InstrumentConfig


class BlockingDriver:
    """Implement the `*_blocking` methods; the async ones run them in the instrument's bus thread.

    The runner attaches the bus before it opens the driver; outside an agent
    (a test, a tool), a driver gets a bus of its own.
    """

    def __init__(self, config: InstrumentConfig) -> None:
        self.config = config
        self._bus: Bus | None = None
        self._own_bus = False

    @staticmethod
    def check_config(config: InstrumentConfig) -> None:
        """Raise `SettingsError` (a ValueError) if the config cannot work; here anything goes."""

    def attach_bus(self, bus: Bus) -> None:
        """Run blocking calls in `bus`'s thread (called by the runner)."""
        self._bus = bus

    @property
    def bus(self) -> Bus:
        """The bus this driver's calls run on."""
        if self._bus is None:
            self._bus = Bus(self.config.bus_name)
            self._own_bus = True  # closed with the driver: nobody else will
        return self._bus

    def info(self) -> InstrumentInfo:
        """Channels with units and commands with typed arguments."""
        raise NotImplementedError

    def open_blocking(self) -> None:
        """Open the instrument; raise `PortError` if it cannot be reached."""
        raise NotImplementedError

    def read_blocking(self) -> dict[str, Value]:
        """Take one reading."""
        raise NotImplementedError

    def execute_blocking(self, name: str, args: dict[str, Any]) -> Any:
        """Run one command (arguments already checked); return its result."""
        raise NotImplementedError

    def close_blocking(self) -> None:
        """Close the instrument; idempotent."""

    async def open(self) -> None:
        """`open_blocking` in the bus thread."""
        await self.bus.run_blocking(self.open_blocking)

    async def read(self) -> dict[str, Value]:
        """`read_blocking` in the bus thread."""
        return await self.bus.run_blocking(self.read_blocking)

    async def execute(self, name: str, args: dict[str, Any]) -> Any:
        """`execute_blocking` in the bus thread."""
        return await self.bus.run_blocking(lambda: self.execute_blocking(name, args))

    async def close(self) -> None:
        """`close_blocking` in the bus thread (and the bus's thread too, if it is the driver's)."""
        await self.bus.run_blocking(self.close_blocking)
        if self._own_bus and self._bus is not None:
            self._bus.close()
            self._bus, self._own_bus = None, False
