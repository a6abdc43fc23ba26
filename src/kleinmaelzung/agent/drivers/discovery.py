"""Drivers are found by entry points in the group `kleinmaelzung.drivers`, each loaded when used.

Loading only the drivers a config names keeps a Pi free of the libraries of
drivers it does not use: an agent with serial instruments only needs no
PyVISA or pymodbus, and says which extra to install for one that does.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib.metadata import entry_points
from typing import cast

from ..errors import AgentError
from .base import DriverClass

GROUP = "kleinmaelzung.drivers"

#: Which of our extras installs a module that a built-in driver imports. A new
#: driver with its own dependencies adds its modules here.
EXTRA_OF_MODULE = {
    "serial": "agent",
    "serial_asyncio_fast": "agent",
    "pyvisa": "visa",
    "pyvisa_py": "visa",
    "pymodbus": "modbus",
    "smbus2": "i2c",
}


class MissingExtra(AgentError):
    """A driver cannot load because a module it imports is not installed.

    `str()` completes "kmz agent ...": it names the extra and the line that installs it.
    """

    def __init__(self, module: str, extra: str | None, driver: str) -> None:
        self.module = module
        self.extra = extra
        self.driver = driver
        if extra is not None:
            self.install = f"pip install 'kleinmaelzung[{extra}]'"
            text = f"needs the {extra} extra: {self.install} (missing module {module})"
        else:
            self.install = f"pip install the package that provides {module}"
            text = f"cannot load driver {driver!r}: missing module {module}"
        super().__init__(text)


def driver_names() -> list[str]:
    """The names of every installed driver, sorted, without loading any."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


@cache
def find_driver(name: str) -> DriverClass:
    """The driver called `name`, loaded now; KeyError if none, MissingExtra if it cannot load."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise KeyError(f"unknown driver {name!r}; installed: {', '.join(driver_names())}")
    try:
        return cast(DriverClass, found[0].load())
    except ModuleNotFoundError as exc:
        module = (exc.name or "?").split(".")[0]
        raise MissingExtra(module, EXTRA_OF_MODULE.get(module), name) from exc


def load_drivers(names: Iterable[str] | None = None) -> dict[str, DriverClass]:
    """Load the named drivers (default: all installed) now; MissingExtra names what to install."""
    return {name: find_driver(name) for name in (driver_names() if names is None else names)}
