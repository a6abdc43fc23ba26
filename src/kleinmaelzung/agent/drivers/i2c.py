"""Sensors on an I2C bus through smbus2, each declared by a map (`i2c_maps/`: SHT3x, BME280).

The driver talks to a small bus interface, `i2c_sensors.I2cBus` (write,
read, and a write-then-read with a repeated start). What a sensor is asked
and how its answer becomes values is its map's, run by `i2c_sensors.Sensor`.
On a Pi the bus is `SMBusLine`, a thin shell over `smbus2.SMBus.i2c_rdwr`;
with `simulated = true` it is the register-level simulator of
`kleinmaelzung.sim.i2c` (this machine, the tests and the demo lab have no I2C
bus). smbus2 blocks, so every exchange runs in the instrument's bus thread;
the sensor's own measuring time is waited there.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec

from ...protocol import InstrumentInfo, Value
from ..config import InstrumentConfig
from ..errors import NoAnswer, PortError
from .blocking import BlockingDriver
from .i2c_sensors import I2cBus, Sensor, SensorMap, load_map
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

    #: A built-in sensor map ("sht3x", "bme280"), or the path of a .toml map.
    sensor: str
    #: The 7-bit address; default: the map's first (0x44 for an SHT3x, 0x76 for a BME280).
    address: Annotated[int, msgspec.Meta(ge=0x03, le=0x77)] | None = None
    #: The adapter: its number (1 is the Pi's header pins) or its path ("/dev/i2c-1").
    bus: int | str = 1
    #: Use the simulated sensor of `kleinmaelzung.sim.i2c` in place of a bus (demo, tests).
    simulated: bool = False
    #: One of the map's measuring modes (an SHT3x's repeatability: "high", "medium", "low").
    mode: str = ""


#: What a user may write, for keys whose msgspec message would only say "invalid".
_CHOICES = {
    "settings.address": "a 7-bit address from 0x03 to 0x77, such as 0x44",
    "settings.bus": 'an adapter number such as 1, or a path such as "/dev/i2c-1"',
}


def _settings(config: InstrumentConfig) -> tuple[I2cSettings, SensorMap, int]:
    """The settings, the sensor's map and the address; SettingsError names the key."""
    try:
        settings = decode_settings(config, I2cSettings)
    except SettingsError as exc:
        hint = _CHOICES.get(exc.key)
        if hint is None or "unknown key" in str(exc) or "missing" in str(exc):
            raise
        # `address` may be left out, never written empty: "int | null" would mislead.
        text = str(exc).replace("`int | null`", "`int`")
        raise SettingsError(exc.key, f"{text}; expected {hint}") from None
    try:
        sensor_map = load_map(settings.sensor)
    except ValueError as exc:
        raise SettingsError("settings.sensor", str(exc)) from None
    kind, addresses = sensor_map.kind, sensor_map.addresses
    address = addresses[0] if settings.address is None else settings.address
    if address not in addresses:
        raise SettingsError(
            "settings.address",
            f"a {kind} answers at {' or '.join(f'0x{a:02X}' for a in addresses)},"
            f" not 0x{address:02X}",
        )
    modes = sensor_map.measure.modes
    if settings.mode and settings.mode not in modes:
        raise SettingsError(
            "settings.mode",
            f"a {kind} measures in {', '.join(repr(m) for m in modes)}, not {settings.mode!r}"
            if modes
            else f"a {kind} has no measuring modes, got {settings.mode!r}",
        )
    if settings.simulated:
        from ...sim import i2c as sim_i2c  # stdlib only; loaded only when a config asks

        if kind not in sim_i2c.DEVICES:
            raise SettingsError(
                "settings.simulated",
                f"no simulated {kind}; the simulator has {', '.join(sim_i2c.DEVICES)}",
            )
    return settings, sensor_map, address


# --- the driver --------------------------------------------------------------


class I2cDriver(BlockingDriver):
    """One sensor at one address of an I2C bus."""

    def __init__(self, config: InstrumentConfig) -> None:
        super().__init__(config)
        self.settings, sensor_map, address = _settings(config)
        where = self.settings.bus
        self.where = f"/dev/i2c-{where}" if isinstance(where, int) else where
        self.where += f"@0x{address:02X}"
        #: The simulated bus, when `simulated = true`: tests and the demo reach its device here.
        self.simulator: SimulatedBus | None = None
        if self.settings.simulated:
            self.simulator = _simulated_bus(sensor_map.kind, address)
        self.sensor = Sensor(sensor_map, address, self.where, self.settings.mode)
        self._line: I2cBus | None = None

    @property
    def identity(self) -> str | None:
        """The sensor found when last opened ("bme280 (chip id 0x60)", "sht3x"); None until then."""
        return self.sensor.identity

    @staticmethod
    def check_config(config: InstrumentConfig) -> None:
        """Raise `SettingsError` (naming the key) if the settings are wrong."""
        _settings(config)

    def info(self) -> InstrumentInfo:
        """The sensor's channels (and commands, such as an SHT3x's heater)."""
        return InstrumentInfo(
            id=self.config.id,
            kind=self.sensor.kind,
            description=self.config.description
            or f"{self.sensor.map.description or self.sensor.kind} at {self.where}",
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


def _simulated_bus(kind: str, address: int) -> SimulatedBus:
    # The simulator is stdlib only and loaded only when a config asks for it
    # (as pyvisa-sim for `backend = "...@sim"`), so a Pi's agent never loads it.
    from ...sim import i2c as sim_i2c

    return sim_i2c.SimulatedBus({address: sim_i2c.DEVICES[kind]()})
