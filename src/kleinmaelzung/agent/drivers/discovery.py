"""Drivers are found by entry points in the group `kleinmaelzung.drivers`."""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points
from typing import cast

from ..errors import AgentError
from .base import DriverClass

GROUP = "kleinmaelzung.drivers"

#: Which of our extras installs a module that a built-in driver imports. A new
#: driver with its own dependencies adds its modules here.
EXTRA_OF_MODULE = {"serial": "agent", "serial_asyncio_fast": "agent"}


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


def load_drivers() -> dict[str, DriverClass]:
    """Import every installed driver now; MissingExtra names what to install if one cannot."""
    drivers: dict[str, DriverClass] = {}
    for ep in entry_points(group=GROUP):
        try:
            drivers[ep.name] = cast(DriverClass, ep.load())
        except ModuleNotFoundError as exc:
            module = (exc.name or "?").split(".")[0]
            raise MissingExtra(module, EXTRA_OF_MODULE.get(module), ep.name) from exc
    return drivers


@lru_cache(maxsize=1)
def available_drivers() -> dict[str, DriverClass]:
    """Every installed driver by name (loaded once)."""
    return load_drivers()


def find_driver(name: str) -> DriverClass:
    """The driver called `name`; KeyError with the known names if there is none."""
    drivers = available_drivers()
    if name not in drivers:
        raise KeyError(f"unknown driver {name!r}; installed: {', '.join(sorted(drivers))}")
    return drivers[name]
