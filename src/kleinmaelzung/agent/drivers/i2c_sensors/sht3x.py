"""Temperature and humidity sensors of the Sensirion SHT3x kind (SHT30, SHT31, SHT35)."""

from __future__ import annotations

import time
from typing import Any, Literal

from ....protocol import Channel, CommandArg, CommandSpec, Value
from ...errors import InstrumentError
from .base import I2cBus, Sensor


def crc8(data: bytes) -> int:
    """Sensirion's CRC-8 over one word: polynomial 0x31, initial value 0xFF (0xBEEF -> 0x92)."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def sht3x_temperature_c(raw: int) -> float:
    """Temperature in °C from its 16-bit raw value (datasheet 4.13)."""
    return -45.0 + 175.0 * raw / 65535.0


def sht3x_humidity(raw: int) -> float:
    """Relative humidity in % from its 16-bit raw value (datasheet 4.13)."""
    return 100.0 * raw / 65535.0


def sht3x_words(answer: bytes, what: str) -> list[int]:
    """The words of an answer (word, CRC, word, CRC...); InstrumentError on a bad CRC."""
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


#: Single-shot commands without clock stretching, and their longest measuring time.
_MEASURE = {"high": (0x2400, 0.0155), "medium": (0x240B, 0.0065), "low": (0x2416, 0.0045)}
_STATUS, _HEATER_ON, _HEATER_OFF = 0xF32D, 0x306D, 0x3066
_STATUS_HEATER = 0x2000


class Sht3x(Sensor):
    """An SHT3x: single-shot measurements, CRC-checked; its heater as a command."""

    kind = "sht3x"
    channels = (Channel(name="temperature", unit="°C"), Channel(name="humidity", unit="%RH"))
    commands = (
        CommandSpec(
            name="heater",
            description="switch the sensor's heater (drives off condensation)",
            args=[CommandArg(name="on", type="bool")],
        ),
    )

    def __init__(
        self, address: int, where: str, repeatability: Literal["high", "medium", "low"] = "high"
    ) -> None:
        super().__init__(address, where)
        self._command, self._duration_s = _MEASURE[repeatability]

    def probe(self, line: I2cBus) -> None:
        """Read the status register: something answers, with valid CRCs."""
        self._status(line)

    def measure(self, line: I2cBus) -> dict[str, Value]:
        """One single-shot measurement."""
        line.write(self.address, self._command.to_bytes(2, "big"))
        # Without clock stretching the sensor NACKs a read until it is done:
        # wait its datasheet maximum, in the bus thread (never on the loop).
        time.sleep(self._duration_s)
        t_raw, rh_raw = sht3x_words(line.read(self.address, 6), "measurement")
        return {
            "temperature": round(sht3x_temperature_c(t_raw), 2),
            "humidity": round(sht3x_humidity(rh_raw), 2),
        }

    def execute(self, line: I2cBus, name: str, args: dict[str, Any]) -> Any:
        """`heater`: switch it, then read the status back to confirm."""
        on = bool(args["on"])
        line.write(self.address, (_HEATER_ON if on else _HEATER_OFF).to_bytes(2, "big"))
        if bool(self._status(line) & _STATUS_HEATER) != on:
            raise InstrumentError(f"heater did not switch {'on' if on else 'off'}")
        return {"on": on}

    def _status(self, line: I2cBus) -> int:
        line.write(self.address, _STATUS.to_bytes(2, "big"))
        return sht3x_words(line.read(self.address, 3), "status")[0]
