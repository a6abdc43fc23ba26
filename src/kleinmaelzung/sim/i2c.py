"""Simulated I2C sensors at register level, and a bus that carries them (stdlib only).

This machine has no I2C bus, so the I2C driver talks to anything with the
bus interface's three calls (`write`, `read`, `write_read`): on a Pi that is
smbus2, in tests and in `kmz sim` it is a `SimulatedBus` holding devices by
address. The devices answer the bytes a real sensor answers: commands,
CRCs and registers, so the driver's framing and arithmetic are what is tested.
"""

from __future__ import annotations

import errno
import random
import struct


def crc8(data: bytes) -> int:
    """Sensirion's CRC-8: polynomial 0x31, initial value 0xFF (0xBEEF -> 0x92)."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class Device:
    """One device on a simulated bus: it gets the bytes written to it and answers reads."""

    def write(self, data: bytes) -> None:
        """The master wrote `data` to this device."""
        raise NotImplementedError

    def read(self, length: int) -> bytes:
        """The master reads `length` bytes."""
        raise NotImplementedError


class Sht3x(Device):
    """A temperature/humidity sensor of the SHT3x kind (Sensirion SHT30/31/35).

    Answers the single-shot measurement commands, the status register and
    the heater and reset commands. `temperature_c` and `humidity` are what it
    measures, each measurement off by a normal error of `noise` (°C and %RH;
    0: exact); `corrupt_crc` makes the next measurements' temperature CRC wrong
    (a noisy line), until it is cleared.
    """

    MEASURE = frozenset({0x2400, 0x240B, 0x2416, 0x2C06, 0x2C0D, 0x2C10})
    STATUS, HEATER_ON, HEATER_OFF, SOFT_RESET, CLEAR_STATUS = 0xF32D, 0x306D, 0x3066, 0x30A2, 0x3041

    def __init__(
        self,
        temperature_c: float = 20.0,
        humidity: float = 50.0,
        *,
        noise: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.temperature_c = temperature_c
        self.humidity = humidity
        self.noise = noise
        self._rng = random.Random(seed)
        self.heater = False
        self.corrupt_crc = False
        self._answer = b""

    def write(self, data: bytes) -> None:
        """Run the 16-bit command in `data`."""
        if len(data) != 2:
            raise OSError(errno.EIO, f"SHT3x: a command is 2 bytes, got {data.hex()}")
        command = int.from_bytes(data, "big")
        if command in self.MEASURE:
            temperature_c, humidity = self.temperature_c, self.humidity
            if self.noise:
                temperature_c += self._rng.gauss(0, self.noise)
                humidity += self._rng.gauss(0, self.noise)
            t_raw = _clamp_u16((temperature_c + 45) * 65535 / 175)
            rh_raw = _clamp_u16(humidity * 65535 / 100)
            self._answer = _word(t_raw, corrupt=self.corrupt_crc) + _word(rh_raw)
        elif command == self.STATUS:
            self._answer = _word(0x2000 if self.heater else 0x0000)
        elif command in (self.HEATER_ON, self.HEATER_OFF):
            self.heater = command == self.HEATER_ON
        elif command == self.SOFT_RESET:
            self.heater, self._answer = False, b""
        elif command != self.CLEAR_STATUS:
            raise OSError(errno.EREMOTEIO, f"SHT3x: unknown command 0x{command:04X} (NACK)")

    def read(self, length: int) -> bytes:
        """The answer to the last command; a read with nothing to answer is NACKed."""
        if not self._answer:
            raise OSError(errno.EREMOTEIO, "SHT3x: no measurement to read (NACK)")
        answer, self._answer = self._answer[:length], b""
        return answer


def _clamp_u16(value: float) -> int:
    return max(0, min(0xFFFF, round(value)))


def _word(value: int, *, corrupt: bool = False) -> bytes:
    data = value.to_bytes(2, "big")
    return data + bytes([crc8(data) ^ (0xFF if corrupt else 0)])


class RegisterDevice(Device):
    """A device with 8-bit registers and an auto-incrementing address (the BME280's interface)."""

    def __init__(self) -> None:
        self.registers = bytearray(256)
        self._pointer = 0

    def write(self, data: bytes) -> None:
        """The first byte selects a register; the following bytes are written from there."""
        if not data:
            return
        self._pointer = data[0]
        for offset, value in enumerate(data[1:]):
            self.write_register(data[0] + offset, value)

    def write_register(self, register: int, value: int) -> None:
        """A register was written (override for side effects)."""
        self.registers[register & 0xFF] = value

    def read(self, length: int) -> bytes:
        """Read from the selected register on."""
        start = self._pointer
        return bytes(self.registers[(start + i) & 0xFF] for i in range(length))


class Bme280(RegisterDevice):
    """A pressure/temperature/humidity sensor of the BME280 kind (Bosch).

    Holds the calibration of the datasheet's worked example and, when forced
    to measure (`ctrl_meas` mode 01), puts into its data registers the raw
    values `raw_temperature`, `raw_pressure` and `raw_humidity`.
    """

    CHIP_ID = 0x60
    #: The calibration of the BMP280 datasheet's worked example (its T and P
    #: formulas are the BME280's), with plausible humidity trimming values.
    CALIBRATION = {
        "T": (27504, 26435, -1000),
        "P": (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000),
        "H": (75, 362, 0, 313, 50, 30),
    }

    def __init__(self) -> None:
        super().__init__()
        self.registers[0xD0] = self.CHIP_ID
        t, p, h = self.CALIBRATION["T"], self.CALIBRATION["P"], self.CALIBRATION["H"]
        self.registers[0x88:0xA0] = struct.pack("<Hhh Hhhhhhhhh", *t, *p)
        self.registers[0xA1] = h[0]
        h4, h5 = h[3], h[4]
        self.registers[0xE1:0xE8] = struct.pack("<hB", h[1], h[2]) + bytes(
            [(h4 >> 4) & 0xFF, ((h5 & 0x0F) << 4) | (h4 & 0x0F), (h5 >> 4) & 0xFF, h[5] & 0xFF]
        )
        self.raw_temperature = 519888
        self.raw_pressure = 415148
        self.raw_humidity = 30000
        self.measurements = 0

    def write_register(self, register: int, value: int) -> None:
        """`ctrl_meas` in forced mode (01) takes a measurement into 0xF7..0xFE."""
        super().write_register(register, value)
        if register == 0xE0 and value == 0xB6:  # soft reset
            self.registers[0xF2:0xF5] = bytes(3)
        if register == 0xF4 and value & 0x03 in (0x01, 0x02):
            self.measurements += 1
            p, t = self.raw_pressure << 4, self.raw_temperature << 4
            self.registers[0xF7:0xFF] = (
                p.to_bytes(3, "big") + t.to_bytes(3, "big") + self.raw_humidity.to_bytes(2, "big")
            )
            self.registers[0xF4] = value & 0xFC  # back to sleep: the measurement is done


#: The simulated sensors by kind (an I2C map's `kind`).
DEVICES: dict[str, type[Device]] = {"sht3x": Sht3x, "bme280": Bme280}


class SimulatedBus:
    """An I2C bus with simulated devices by 7-bit address; an empty address NACKs, as a real one."""

    def __init__(self, devices: dict[int, Device] | None = None) -> None:
        self.devices: dict[int, Device] = dict(devices or {})
        self.closed = False

    def _device(self, address: int) -> Device:
        if self.closed:
            raise OSError(errno.EBADF, "bus is closed")
        device = self.devices.get(address)
        if device is None:
            raise OSError(errno.EREMOTEIO, f"no device at 0x{address:02X} (NACK)")
        return device

    def write(self, address: int, data: bytes) -> None:
        """Write `data` to the device at `address`."""
        self._device(address).write(bytes(data))

    def read(self, address: int, length: int) -> bytes:
        """Read `length` bytes from the device at `address`."""
        return self._device(address).read(length)

    def write_read(self, address: int, data: bytes, length: int) -> bytes:
        """Write then read with a repeated start (a register read)."""
        device = self._device(address)
        device.write(bytes(data))
        return device.read(length)

    def close(self) -> None:
        """Close the bus; idempotent."""
        self.closed = True
