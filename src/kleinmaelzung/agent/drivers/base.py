"""The Driver interface: what the runner needs from any kind of instrument."""

from __future__ import annotations

from typing import Any, Protocol

from ...protocol import InstrumentInfo, Value
from ..config import InstrumentConfig


class Driver(Protocol):
    """One instrument: describe it, open it, read it, drive it, close it.

    Drivers know instruments, not the wire: they return channel values and
    results, and raise `DriverError`s; the runner makes messages of them.
    Any other exception is taken for a driver bug: it faults the instrument
    (a command gets `internal_error`) and is logged with its traceback once,
    while the other instruments carry on.

    Optionally, a driver has a read-only attribute `identity: str | None`:
    what the instrument answered when last opened and asked who it is (a
    `*IDN?` answer, a chip id), or None if it was not asked or has no way to
    say. `kmz agent --check` shows it; it is read with
    `getattr(driver, "identity", None)`, so drivers without it keep working.
    """

    def __init__(self, config: InstrumentConfig) -> None: ...

    def info(self) -> InstrumentInfo:
        """Channels with units and commands with typed arguments."""
        ...

    async def open(self) -> None:
        """Open the port; raise `PortError` if it cannot be opened."""
        ...

    async def read(self) -> dict[str, Value]:
        """Take one reading: finite numbers, booleans or strings by channel name."""
        ...

    async def execute(self, name: str, args: dict[str, Any]) -> Any:
        """Run one command (arguments already checked against `info()`); return its result."""
        ...

    async def close(self) -> None:
        """Close the port; idempotent."""
        ...


class DriverClass(Protocol):
    """What an entry point in `kleinmaelzung.drivers` must name."""

    def __call__(self, config: InstrumentConfig) -> Driver: ...

    @staticmethod
    def check_config(config: InstrumentConfig) -> None:
        """Raise ValueError(message) if the config cannot work with this driver."""
        ...
