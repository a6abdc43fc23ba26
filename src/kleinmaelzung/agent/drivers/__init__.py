"""The public driver API: what a driver for another instrument builds on.

A driver is a class registered under the entry-point group
`kleinmaelzung.drivers`; `docs/drivers.md` shows a complete one. It gets its
`InstrumentConfig` (common keys, and its own `settings` table, decoded with
`decode_settings`), describes the instrument (`InstrumentInfo` with
`Channel`s and `CommandSpec`s), returns readings as `Value`s by channel, and
raises the errors below; anything else it raises faults the instrument, not
the agent. A driver over a blocking library subclasses `BlockingDriver`.
"""

from ...protocol import Channel, CommandArg, CommandSpec, InstrumentInfo, Value
from ..buses import Bus
from ..config import InstrumentConfig
from ..errors import DriverError, InstrumentError, NoAnswer, PortError
from .base import Driver, DriverClass
from .blocking import BlockingDriver
from .discovery import GROUP, MissingExtra, driver_names, find_driver, load_drivers
from .settings import SettingsError, decode_settings

__all__ = [
    "GROUP",
    "BlockingDriver",
    "Bus",
    "Channel",
    "CommandArg",
    "CommandSpec",
    "Driver",
    "DriverClass",
    "DriverError",
    "InstrumentConfig",
    "InstrumentError",
    "InstrumentInfo",
    "MissingExtra",
    "NoAnswer",
    "PortError",
    "SettingsError",
    "Value",
    "decode_settings",
    "driver_names",
    "find_driver",
    "load_drivers",
]
