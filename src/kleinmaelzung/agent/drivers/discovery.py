"""Drivers are found by entry points in the group `kleinmaelzung.drivers`."""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points
from typing import cast

from .base import DriverClass

GROUP = "kleinmaelzung.drivers"


@lru_cache(maxsize=1)
def available_drivers() -> dict[str, DriverClass]:
    """Every installed driver by name."""
    return {ep.name: cast(DriverClass, ep.load()) for ep in entry_points(group=GROUP)}


def find_driver(name: str) -> DriverClass:
    """The driver called `name`; KeyError with the known names if there is none."""
    drivers = available_drivers()
    if name not in drivers:
        raise KeyError(f"unknown driver {name!r}; installed: {', '.join(sorted(drivers))}")
    return drivers[name]
