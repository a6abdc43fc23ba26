"""`kmz agent --check`: open each configured instrument once, take one reading, close it.

For the person setting up a Pi: it answers "is each instrument wired and
configured right?" without a hub. Every instrument is checked on its own,
with a deadline; whatever one driver raises (or how long it hangs) is that
instrument's result, never the end of the check. The table shows what each
instrument said it is (a driver's optional `identity`), so a wrong instrument
on the right port is seen before data flows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..protocol import Value
from .config import AgentConfig, InstrumentConfig
from .drivers.base import Driver, DriverClass
from .drivers.discovery import find_driver
from .errors import AgentError

log = logging.getLogger(__name__)

#: Long enough for a slow serial instrument's open and first answer (the
#: serial line driver waits up to a second per reply), short enough that a
#: dead instrument does not leave the person at the Pi wondering.
DEFAULT_TIMEOUT_S = 5.0
#: Closing gets its own short deadline: a driver stuck in close must not hide the result.
CLOSE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class CheckResult:
    """What one instrument did when opened and read once."""

    instrument: str
    driver: str
    #: Where it is: the port, VISA resource, host or bus from the config.
    where: str
    #: The reading by channel; empty when `error` is set.
    values: Mapping[str, Value] = field(default_factory=dict)
    #: Units of the channels, from the driver's `info()`.
    units: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    #: What the instrument answered when asked who it is (a `*IDN?` answer, a
    #: chip id), from the driver's optional `identity`; None if it has none.
    identity: str | None = None

    @property
    def ok(self) -> bool:
        """True if the instrument answered with a reading."""
        return self.error is None

    def describe_reading(self) -> str:
        """The reading as "channel=value unit, ...", or the error."""
        if self.error is not None:
            return f"error: {self.error}"
        return ", ".join(
            f"{name}={_format_value(value)}{' ' + self.units[name] if self.units.get(name) else ''}"
            for name, value in self.values.items()
        )


#: The columns of `kmz agent --check`'s table.
TABLE_HEADER = ("INSTRUMENT", "DRIVER", "PORT/RESOURCE", "IDENTITY", "READING")


def table_rows(results: Sequence[CheckResult]) -> list[tuple[str, str, str, str, str]]:
    """The table's rows, header first; "-" where there is nothing to show."""
    rows = [TABLE_HEADER]
    rows += [
        (r.instrument, r.driver, r.where or "-", r.identity or "-", r.describe_reading())
        for r in results
    ]
    return rows


def format_table(results: Sequence[CheckResult]) -> str:
    """The table as text, columns aligned; the last (a reading, an error) runs free."""
    rows = table_rows(results)
    widths = [max(len(row[column]) for row in rows) for column in range(len(TABLE_HEADER) - 1)]
    return "\n".join(
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]
        )
        for row in rows
    )


def where_of(config: InstrumentConfig) -> str:
    """The port or resource an instrument is reached through, as the config names it."""
    if config.port:
        return config.port
    settings = config.settings
    usb = settings.get("usb")
    if isinstance(usb, str) and usb:
        return f"usb {usb}"
    for key in ("resource", "serial_port"):
        value = settings.get(key)
        if isinstance(value, str) and value:
            return value
    host = settings.get("host")
    if isinstance(host, str) and host:
        port = settings.get("port")
        return f"{host}:{port}" if isinstance(port, int) else host
    bus = settings.get("bus")  # an I2C adapter: its number or its path
    if isinstance(bus, str | int) and not isinstance(bus, bool) and str(bus):
        return f"/dev/i2c-{bus}" if isinstance(bus, int) else bus
    return config.bus or ""


async def check_instrument(
    config: InstrumentConfig,
    *,
    driver_class: DriverClass | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> CheckResult:
    """Open, read once and close one instrument within `timeout_s`; any failure is the result."""
    where = where_of(config)

    def failed(error: str) -> CheckResult:
        return CheckResult(config.id, config.driver, where, error=error)

    try:
        # The config check already loaded it; the lookup is cached.
        driver = (driver_class or find_driver(config.driver))(config)
    except Exception as exc:  # a driver's own bug is this instrument's result
        return failed(_describe(exc))
    try:
        async with asyncio.timeout(timeout_s):
            units = {channel.name: channel.unit for channel in driver.info().channels}
            await driver.open()
            values = await driver.read()
    except TimeoutError:
        result = failed(f"no answer within {timeout_s:g} s")
    except Exception as exc:  # any driver failure, of any type, is this instrument's result
        result = failed(_describe(exc))
    else:
        result = CheckResult(config.id, config.driver, where, values=dict(values), units=units)
    # Also when the reading failed: who answered tells a wrong instrument from a broken one.
    result = dataclasses.replace(result, identity=identity_of(driver))
    await _close(driver, config.id)
    return result


def identity_of(driver: object) -> str | None:
    """The driver's optional `identity` (what the instrument said it is), or None.

    Optional, so that drivers written before it keep working; a driver whose
    attribute fails (a bug) has none, rather than failing the check.
    """
    try:
        identity = getattr(driver, "identity", None)
    except Exception:
        log.debug("identity failed", exc_info=True)
        return None
    return str(identity) if identity not in (None, "") else None


async def check_instruments(
    config: AgentConfig, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[CheckResult]:
    """Check every instrument of a (valid) config, one after another, in config order."""
    # One at a time: instruments that share a bus (an RS-485 line) must not talk at once,
    # and the order of the output is the order of the config.
    return [await check_instrument(i, timeout_s=timeout_s) for i in config.instruments]


async def _close(driver: Driver, instrument: str) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await driver.close()
    except Exception:
        # The result is already decided; a failing close only matters to the logs.
        log.warning("close failed", extra={"instrument": instrument}, exc_info=True)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    # Our errors read as sentences; a bare KeyError('x') from a driver bug needs its type.
    if isinstance(exc, AgentError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _format_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    return str(value)
