"""Sensors on an I2C bus through smbus2: the SHT3x (temperature, humidity) and BME280 kinds.

The driver talks to a small bus interface, `i2c_sensors.I2cBus` (write,
read, and a write-then-read with a repeated start); what each sensor says
and how its answer is converted lives in `i2c_sensors/`. On a Pi that is `SMBusLine`, a thin
shell over `smbus2.SMBus.i2c_rdwr`; with `simulated = true` it is the
register-level simulator of `kleinmaelzung.sim.i2c` (this machine, the tests
and the demo lab have no I2C bus). smbus2 blocks, so every exchange runs in
the instrument's bus thread; the sensor's own measuring time is waited there.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec

from ...protocol import InstrumentInfo, Value
from ..config import InstrumentConfig
from ..errors import NoAnswer, PortError
from .blocking import BlockingDriver
from .i2c_sensors import Bme280, I2cBus, Sensor, Sht3x
from .settings import SettingsError, decode_settings

if TYPE_CHECKING:
    import smbus2

    from ...sim.i2c import SimulatedBus

T = TypeVar("T")

# --- the bus -----------------------------------------------------------------


class SMBusLine:
    """`I2cBus` over smbus2 on a Linux I2C adapter (`/dev/i2c-N`).

    `SMBus`'s block calls always send a register byte first; an SHT3x answers a
    plain read, so every exchange goes through `i2c_rdwr` (raw I2C messages).
    """

    def __init__(self, bus: int | str) -> None:
        import smbus2  # here, not at the top: a simulated sensor needs no smbus2

        self._smbus2 = smbus2
        opened = smbus2.SMBus()
        try:
            opened.open(bus)
        except OSError:
            # SMBus.open keeps the file it opened when its ioctl fails (not an adapter).
            opened.close()
            raise
        self._bus: smbus2.SMBus | None = opened

    def _open(self) -> smbus2.SMBus:
        if self._bus is None:
            raise OSError(errno.EBADF, "bus is closed")
        return self._bus

    def write(self, address: int, data: bytes) -> None:
        """Write `data` to the device at `address`."""
        self._open().i2c_rdwr(self._smbus2.i2c_msg.write(address, data))

    def read(self, address: int, length: int) -> bytes:
        """Read `length` bytes from the device at `address`."""
        message = self._smbus2.i2c_msg.read(address, length)
        self._open().i2c_rdwr(message)
        return bytes(message)

    def write_read(self, address: int, data: bytes, length: int) -> bytes:
        """Write then read in one transaction (repeated start)."""
        message = self._smbus2.i2c_msg.read(address, length)
        self._open().i2c_rdwr(self._smbus2.i2c_msg.write(address, data), message)
        return bytes(message)

    def close(self) -> None:
        """Close the adapter's file; idempotent."""
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.close()


# --- the settings ------------------------------------------------------------


class I2cSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[instruments.settings]` of a `driver = "i2c"` instrument."""

    #: "sht3x" (Sensirion SHT30/31/35) or "bme280" (Bosch).
    sensor: Literal["sht3x", "bme280"]
    #: The 7-bit address: 0x44 or 0x45 for an SHT3x, 0x76 or 0x77 for a BME280.
    address: Annotated[int, msgspec.Meta(ge=0x03, le=0x77)]
    #: The adapter: its number (1 is the Pi's header pins) or its path ("/dev/i2c-1").
    bus: int | str = 1
    #: Use the simulated sensor of `kleinmaelzung.sim.i2c` in place of a bus (demo, tests).
    simulated: bool = False
    #: SHT3x only: the single-shot repeatability (slower is less noisy).
    repeatability: Literal["high", "medium", "low"] = "high"


#: What a user may write, for keys whose msgspec message would only say "invalid".
_CHOICES = {
    "settings.sensor": '"sht3x" or "bme280"',
    "settings.repeatability": '"high", "medium" or "low"',
    "settings.address": "a 7-bit address from 0x03 to 0x77, such as 0x44",
    "settings.bus": 'an adapter number such as 1, or a path such as "/dev/i2c-1"',
}


def _settings(config: InstrumentConfig) -> I2cSettings:
    try:
        return decode_settings(config, I2cSettings)
    except SettingsError as exc:
        hint = _CHOICES.get(exc.key)
        if hint is None or "unknown key" in str(exc) or "missing" in str(exc):
            raise
        raise SettingsError(exc.key, f"{exc}; expected {hint}") from None


# --- the driver --------------------------------------------------------------


class I2cDriver(BlockingDriver):
    """One sensor at one address of an I2C bus."""

    def __init__(self, config: InstrumentConfig) -> None:
        super().__init__(config)
        self.settings = _settings(config)
        where = self.settings.bus
        self.where = f"/dev/i2c-{where}" if isinstance(where, int) else where
        self.where += f"@0x{self.settings.address:02X}"
        #: The simulated bus, when `simulated = true`: tests and the demo reach its device here.
        self.simulator: SimulatedBus | None = None
        if self.settings.simulated:
            self.simulator = _simulated_bus(self.settings)
        self.sensor: Sensor = (
            Sht3x(self.settings.address, self.where, self.settings.repeatability)
            if self.settings.sensor == "sht3x"
            else Bme280(self.settings.address, self.where)
        )
        self._line: I2cBus | None = None

    @staticmethod
    def check_config(config: InstrumentConfig) -> None:
        """Raise `SettingsError` (naming the key) if the settings are wrong."""
        _settings(config)

    def info(self) -> InstrumentInfo:
        """The sensor's channels (and commands, such as an SHT3x's heater)."""
        return InstrumentInfo(
            id=self.config.id,
            kind=self.sensor.kind,
            description=self.config.description or f"{self.sensor.kind} at {self.where}",
            channels=list(self.sensor.channels),
            commands=list(self.sensor.commands),
            poll_interval_s=self.config.poll_interval_s,
        )

    def open_blocking(self) -> None:
        """Open the bus and check that the expected sensor answers at the address."""
        self.close_blocking()
        if self.simulator is not None:
            self._line = self.simulator
        else:
            self._line = _open_smbus(self.settings.bus, self.where)
        opened = False
        try:
            self._exchange(self.sensor.probe, probing=True)
            opened = True
        finally:
            if not opened:  # half open is not open: the next open starts clean
                self.close_blocking()

    def close_blocking(self) -> None:
        """Close the bus; idempotent. A simulated bus stays usable for the next open."""
        line, self._line = self._line, None
        if line is not None and line is not self.simulator:
            with contextlib.suppress(OSError):
                line.close()

    def read_blocking(self) -> dict[str, Value]:
        """One measurement."""
        return self._exchange(self.sensor.measure)

    def execute_blocking(self, name: str, args: dict[str, Any]) -> Any:
        """Run one of the sensor's commands."""
        return self._exchange(lambda line: self.sensor.execute(line, name, args))

    def _exchange(self, exchange: Callable[[I2cBus], T], *, probing: bool = False) -> T:
        """Run `exchange(line)`, turning the kernel's errors into driver errors."""
        if self._line is None:
            raise PortError(f"{self.where} is not open")
        try:
            return exchange(self._line)
        except OSError as exc:
            text = exc.strerror or str(exc)
            if probing:
                raise PortError(f"{self.where}: no {self.sensor.kind} answered ({text})") from None
            if exc.errno in (errno.EREMOTEIO, errno.ENXIO, errno.EIO, errno.ETIMEDOUT):
                raise NoAnswer(f"{self.where}: no answer ({text})") from None
            raise PortError(f"{self.where}: {text}") from None


def _open_smbus(bus: int | str, where: str) -> SMBusLine:
    try:
        return SMBusLine(bus)
    except ModuleNotFoundError:
        raise PortError(
            f"{where}: smbus2 is not installed: pip install 'kleinmaelzung[i2c]'"
        ) from None
    except FileNotFoundError:
        raise PortError(f"{where}: no such I2C bus (is I2C enabled?)") from None
    except PermissionError:
        raise PortError(f"{where}: permission denied (is the user in the i2c group?)") from None
    except OSError as exc:
        if exc.errno == errno.ENOTTY:  # the I2C_FUNCS ioctl was refused
            raise PortError(f"{where}: not an I2C adapter") from None
        raise PortError(f"{where}: {exc.strerror or exc}") from None


def _simulated_bus(settings: I2cSettings) -> SimulatedBus:
    # The simulator is stdlib only and loaded only when a config asks for it
    # (as pyvisa-sim for `backend = "...@sim"`), so a Pi's agent never loads it.
    from ...sim import i2c as sim_i2c

    device: sim_i2c.Device = sim_i2c.Sht3x() if settings.sensor == "sht3x" else sim_i2c.Bme280()
    return sim_i2c.SimulatedBus({settings.address: device})
