"""Sensors on an I2C bus through smbus2: the SHT3x (temperature, humidity) and BME280 kinds.

The driver talks to a small bus interface, `I2cBus` (write, read, and a
write-then-read with a repeated start). On a Pi that is `SMBusLine`, a thin
shell over `smbus2.SMBus.i2c_rdwr`; with `simulated = true` it is the
register-level simulator of `kleinmaelzung.sim.i2c` (this machine, the tests
and the demo lab have no I2C bus). smbus2 blocks, so every exchange runs in
the instrument's bus thread; the sensor's own measuring time is waited there.
"""

from __future__ import annotations

import contextlib
import errno
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeVar

import msgspec

from ...protocol import Channel, CommandArg, CommandSpec, InstrumentInfo, Value
from ..config import InstrumentConfig
from ..errors import InstrumentError, NoAnswer, PortError
from .blocking import BlockingDriver
from .settings import SettingsError, decode_settings

if TYPE_CHECKING:
    import smbus2

    from ...sim.i2c import SimulatedBus

T = TypeVar("T")

# --- the bus -----------------------------------------------------------------


class I2cBus(Protocol):
    """The few calls a sensor needs; `SMBusLine` (smbus2) and `sim.i2c.SimulatedBus` have them.

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


class SMBusLine:
    """`I2cBus` over smbus2 on a Linux I2C adapter (`/dev/i2c-N`).

    `SMBus`'s block calls always send a register byte first; an SHT3x answers a
    plain read, so every exchange goes through `i2c_rdwr` (raw I2C messages).
    """

    def __init__(self, bus: int | str) -> None:
        import smbus2  # here, not at the top: a simulated sensor needs no smbus2

        self._smbus2 = smbus2
        self._bus: smbus2.SMBus | None = smbus2.SMBus(bus)

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


# --- the sensors -------------------------------------------------------------


def crc8(data: bytes) -> int:
    """Sensirion's CRC-8 over one word: polynomial 0x31, initial value 0xFF (0xBEEF -> 0x92)."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def sht3x_temperature_c(raw: int) -> float:
    """SHT3x temperature in °C from its 16-bit raw value (datasheet 4.13)."""
    return -45.0 + 175.0 * raw / 65535.0


def sht3x_humidity(raw: int) -> float:
    """SHT3x relative humidity in % from its 16-bit raw value (datasheet 4.13)."""
    return 100.0 * raw / 65535.0


def sht3x_words(answer: bytes, what: str) -> list[int]:
    """The words of an SHT3x answer (word, CRC, word, CRC...); InstrumentError on a bad CRC."""
    if len(answer) % 3:
        raise InstrumentError(f"{what}: answer of {len(answer)} bytes, expected words of 3")
    words = []
    for at in range(0, len(answer), 3):
        word, crc = answer[at : at + 2], answer[at + 2]
        if crc8(word) != crc:
            raise InstrumentError(
                f"{what}: CRC mismatch in word {at // 3} (0x{word.hex().upper()}):"
                f" got 0x{crc:02X}, expected 0x{crc8(word):02X}"
            )
        words.append(int.from_bytes(word, "big"))
    return words


#: SHT3x single-shot commands without clock stretching, and their longest measuring time.
_SHT3X_MEASURE = {"high": (0x2400, 0.0155), "medium": (0x240B, 0.0065), "low": (0x2416, 0.0045)}
_SHT3X_STATUS, _SHT3X_HEATER_ON, _SHT3X_HEATER_OFF = 0xF32D, 0x306D, 0x3066


class Bme280Calibration(msgspec.Struct, frozen=True):
    """The trimming values a BME280 holds in 0x88..0xA1 and 0xE1..0xE7 (datasheet 4.2.2)."""

    t: tuple[int, int, int]
    p: tuple[int, int, int, int, int, int, int, int, int]
    h: tuple[int, int, int, int, int, int]

    @classmethod
    def from_registers(cls, low: bytes, high: bytes) -> Bme280Calibration:
        """From the 26 bytes at 0x88 and the 7 bytes at 0xE1."""
        values = struct.unpack("<Hhh Hhhhhhhhh", low[:24])
        h2, h3 = struct.unpack("<hB", high[:3])
        h4 = _signed12((high[3] << 4) | (high[4] & 0x0F))
        h5 = _signed12((high[5] << 4) | (high[4] >> 4))
        h6 = struct.unpack("<b", high[6:7])[0]
        return cls(t=values[:3], p=values[3:], h=(low[25], h2, h3, h4, h5, h6))


def _signed12(value: int) -> int:
    return value - 0x1000 if value & 0x800 else value


def _c_div(a: int, b: int) -> int:
    """Integer division truncating towards zero, as C's `/` (Python's `//` floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def bme280_compensate(
    calibration: Bme280Calibration, adc_t: int, adc_p: int, adc_h: int
) -> tuple[int, int, int, int]:
    """The datasheet's integer compensation (4.2.3): T in 0.01 °C, p in Pa/256, H in %/1024.

    Returns (T, p, H, t_fine). Python's `>>` on a negative number is C's
    arithmetic shift as the datasheet's compilers do it; its `/` is `_c_div`.
    """
    t1, t2, t3 = calibration.t
    var1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11
    var2 = (((((adc_t >> 4) - t1) * ((adc_t >> 4) - t1)) >> 12) * t3) >> 14
    t_fine = var1 + var2
    temperature = (t_fine * 5 + 128) >> 8

    p1, p2, p3, p4, p5, p6, p7, p8, p9 = calibration.p
    v1 = t_fine - 128000
    v2 = v1 * v1 * p6
    v2 = v2 + ((v1 * p5) << 17)
    v2 = v2 + (p4 << 35)
    v1 = ((v1 * v1 * p3) >> 8) + ((v1 * p2) << 12)
    v1 = (((1 << 47) + v1) * p1) >> 33
    if v1 == 0:
        pressure = 0  # the datasheet's guard against division by zero
    else:
        p = 1048576 - adc_p
        p = _c_div(((p << 31) - v2) * 3125, v1)
        v1 = (p9 * (p >> 13) * (p >> 13)) >> 25
        v2 = (p8 * p) >> 19
        pressure = ((p + v1 + v2) >> 8) + (p7 << 4)

    h1, h2, h3, h4, h5, h6 = calibration.h
    x = t_fine - 76800
    x = (((adc_h << 14) - (h4 << 20) - (h5 * x)) + 16384) >> 15
    x = x * (
        (((((((t_fine - 76800) * h6) >> 10) * ((((t_fine - 76800) * h3) >> 11) + 32768)) >> 10)
          + 2097152) * h2 + 8192) >> 14
    )  # fmt: skip
    x = x - (((((x >> 15) * (x >> 15)) >> 7) * h1) >> 4)
    x = min(max(x, 0), 419430400)
    return temperature, pressure, x >> 12, t_fine


_BME280_CHIP_ID, _BMP280_CHIP_IDS = 0x60, {0x56, 0x57, 0x58}
#: ctrl_hum: humidity oversampling x1; ctrl_meas: T and p oversampling x1, forced mode.
_BME280_CTRL_HUM, _BME280_CTRL_MEAS = 0x01, 0b001_001_01
#: The datasheet's longest measuring time at these settings is 9.3 ms (appendix 9.1).
_BME280_MEASURE_S, _BME280_MEASURE_DEADLINE_S = 0.0095, 0.1


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
        self._line: I2cBus | None = None
        self._calibration: Bme280Calibration | None = None

    @staticmethod
    def check_config(config: InstrumentConfig) -> None:
        """Raise `SettingsError` (naming the key) if the settings are wrong."""
        _settings(config)

    def info(self) -> InstrumentInfo:
        """Temperature and humidity (and pressure, for a BME280); an SHT3x's heater."""
        channels = [
            Channel(name="temperature", unit="°C"),
            Channel(name="humidity", unit="%RH"),
        ]
        commands: list[CommandSpec] = []
        if self.settings.sensor == "bme280":
            channels.append(Channel(name="pressure", unit="hPa"))
        else:
            commands.append(
                CommandSpec(
                    name="heater",
                    description="switch the sensor's heater (drives off condensation)",
                    args=[CommandArg(name="on", type="bool")],
                )
            )
        return InstrumentInfo(
            id=self.config.id,
            kind=self.settings.sensor,
            description=self.config.description or f"{self.settings.sensor} at {self.where}",
            channels=channels,
            commands=commands,
            poll_interval_s=self.config.poll_interval_s,
        )

    def open_blocking(self) -> None:
        """Open the bus and check that the expected sensor answers at the address."""
        self.close_blocking()
        if self.simulator is not None:
            self._line = self.simulator
        else:
            try:
                self._line = SMBusLine(self.settings.bus)
            except FileNotFoundError:
                raise PortError(f"{self.where}: no such I2C bus (is I2C enabled?)") from None
            except PermissionError:
                raise PortError(
                    f"{self.where}: permission denied (is the user in the i2c group?)"
                ) from None
            except OSError as exc:
                raise PortError(f"{self.where}: {exc.strerror or exc}") from None
        opened = False
        try:
            if self.settings.sensor == "sht3x":
                self._exchange(self._sht3x_status, probing=True)
            else:
                self._calibration = self._exchange(self._bme280_probe, probing=True)
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
        if self.settings.sensor == "sht3x":
            return self._exchange(self._sht3x_measure)
        return self._exchange(self._bme280_measure)

    def execute_blocking(self, name: str, args: dict[str, Any]) -> Any:
        """`heater`: switch an SHT3x's heater, then read its status back to confirm."""
        on = bool(args["on"])
        command = _SHT3X_HEATER_ON if on else _SHT3X_HEATER_OFF

        def switch(line: I2cBus) -> dict[str, Any]:
            line.write(self.settings.address, command.to_bytes(2, "big"))
            if bool(self._sht3x_status(line) & 0x2000) != on:
                raise InstrumentError(f"heater did not switch {'on' if on else 'off'}")
            return {"on": on}

        return self._exchange(switch)

    # --- exchanges -------------------------------------------------------------

    def _exchange(self, exchange: Callable[[I2cBus], T], *, probing: bool = False) -> T:
        """Run `exchange(line)`, turning the kernel's errors into driver errors."""
        if self._line is None:
            raise PortError(f"{self.where} is not open")
        try:
            return exchange(self._line)
        except OSError as exc:
            nack = exc.errno in (errno.EREMOTEIO, errno.ENXIO, errno.EIO, errno.ETIMEDOUT)
            text = exc.strerror or str(exc)
            if probing:
                raise PortError(
                    f"{self.where}: no {self.settings.sensor} answered ({text})"
                ) from None
            if nack:
                raise NoAnswer(f"{self.where}: no answer ({text})") from None
            raise PortError(f"{self.where}: {text}") from None

    def _sht3x_status(self, line: I2cBus) -> int:
        line.write(self.settings.address, _SHT3X_STATUS.to_bytes(2, "big"))
        return sht3x_words(line.read(self.settings.address, 3), "status")[0]

    def _sht3x_measure(self, line: I2cBus) -> dict[str, Value]:
        command, duration_s = _SHT3X_MEASURE[self.settings.repeatability]
        line.write(self.settings.address, command.to_bytes(2, "big"))
        # Without clock stretching the sensor NACKs a read until it is done:
        # wait its datasheet maximum, in the bus thread (never on the loop).
        time.sleep(duration_s)
        t_raw, rh_raw = sht3x_words(line.read(self.settings.address, 6), "measurement")
        return {
            "temperature": round(sht3x_temperature_c(t_raw), 2),
            "humidity": round(sht3x_humidity(rh_raw), 2),
        }

    def _bme280_probe(self, line: I2cBus) -> Bme280Calibration:
        address = self.settings.address
        chip_id = line.write_read(address, b"\xd0", 1)[0]
        if chip_id in _BMP280_CHIP_IDS:
            raise PortError(f"{self.where}: a BMP280 (id 0x{chip_id:02X}) answered: no humidity")
        if chip_id != _BME280_CHIP_ID:
            raise PortError(
                f"{self.where}: wrong sensor: chip id 0x{chip_id:02X}, expected 0x60 (BME280)"
            )
        low = line.write_read(address, b"\x88", 26)
        high = line.write_read(address, b"\xe1", 7)
        return Bme280Calibration.from_registers(low, high)

    def _bme280_measure(self, line: I2cBus) -> dict[str, Value]:
        address, calibration = self.settings.address, self._calibration
        assert calibration is not None  # read only after a successful open
        # ctrl_hum takes effect only with the next write of ctrl_meas: this order.
        line.write(address, bytes([0xF2, _BME280_CTRL_HUM]))
        line.write(address, bytes([0xF4, _BME280_CTRL_MEAS]))
        time.sleep(_BME280_MEASURE_S)
        deadline = time.monotonic() + _BME280_MEASURE_DEADLINE_S
        while line.write_read(address, b"\xf3", 1)[0] & 0x08:  # status.measuring
            if time.monotonic() > deadline:
                raise NoAnswer(f"{self.where}: measurement did not finish")
            time.sleep(0.001)
        data = line.write_read(address, b"\xf7", 8)
        adc_p = (data[0] << 12) | (data[1] << 4) | (data[2] >> 4)
        adc_t = (data[3] << 12) | (data[4] << 4) | (data[5] >> 4)
        adc_h = (data[6] << 8) | data[7]
        if adc_t == 0x80000 or adc_p == 0x80000 or adc_h == 0x8000:
            raise InstrumentError(
                f"{self.where}: measurement skipped (registers hold reset values)"
            )
        temperature, pressure, humidity, _ = bme280_compensate(calibration, adc_t, adc_p, adc_h)
        return {
            "temperature": temperature / 100,
            "humidity": round(humidity / 1024, 2),
            "pressure": round(pressure / 256 / 100, 3),
        }


def _simulated_bus(settings: I2cSettings) -> SimulatedBus:
    # The simulator is stdlib only and loaded only when a config asks for it
    # (as pyvisa-sim for `backend = "...@sim"`), so a Pi's agent never loads it.
    from ...sim import i2c as sim_i2c

    device: sim_i2c.Device = sim_i2c.Sht3x() if settings.sensor == "sht3x" else sim_i2c.Bme280()
    return sim_i2c.SimulatedBus({settings.address: device})
