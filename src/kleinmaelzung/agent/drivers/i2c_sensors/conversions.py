"""The arithmetic a map names with `conversion`: from a measurement's bytes to values.

A new kind of arithmetic (another maker's compensation) is one entry in
`CONVERSIONS`; a new sensor whose arithmetic is known is a map only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .bme280 import Bme280Calibration, bme280_values
from .maps import data_length

if TYPE_CHECKING:
    from .maps import SensorMap

#: A measurement's data bytes (CRCs taken out) -> values by channel name, in the channels' units.
Converter = Callable[[bytes], dict[str, float]]


@dataclass(frozen=True)
class Conversion:
    """One kind of arithmetic: how to prepare it once opened, and what it needs of a map."""

    #: Given the map and the calibration blocks read on opening: the converter.
    prepare: Callable[[SensorMap, Sequence[bytes]], Converter]
    #: What is wrong with a map for this conversion, or "".
    check: Callable[[SensorMap], str]


def _linear(sensor_map: SensorMap, calibration: Sequence[bytes]) -> Converter:
    channels = [(c.name, c.word or 0, c.offset, c.span / c.full_scale) for c in sensor_map.channels]

    def convert(data: bytes) -> dict[str, float]:
        return {
            name: offset + per_count * int.from_bytes(data[2 * word : 2 * word + 2], "big")
            for name, word, offset, per_count in channels
        }

    return convert


def _check_linear(sensor_map: SensorMap) -> str:
    words = data_length(sensor_map, sensor_map.measure.read) // 2
    for index, channel in enumerate(sensor_map.channels):
        where = f"channels[{index}]"
        if channel.word is None:
            return f"{where}.word: a linear channel needs the word it is read from"
        if channel.word >= words:
            return f"{where}.word: {channel.word}, but a measurement holds {words} words"
        if not (math.isfinite(channel.span) and math.isfinite(channel.offset)):
            return f"{where}: span and offset must be finite numbers"
    return ""


#: What a BME280's compensation gives; a map may list fewer.
_BME280_CHANNELS = ("temperature", "humidity", "pressure")


def _bme280(sensor_map: SensorMap, calibration: Sequence[bytes]) -> Converter:
    trimming = Bme280Calibration.from_registers(calibration[0], calibration[1])
    return lambda data: bme280_values(trimming, data)


def _check_bme280(sensor_map: SensorMap) -> str:
    if [t.read for t in sensor_map.calibration] != [26, 7]:
        return "calibration: the bme280 conversion reads 26 bytes at 0x88, then 7 at 0xE1"
    if sensor_map.crc is not None or data_length(sensor_map, sensor_map.measure.read) != 8:
        return "measure.read: the bme280 conversion takes the 8 data bytes at 0xF7, no CRC"
    for index, channel in enumerate(sensor_map.channels):
        if channel.name not in _BME280_CHANNELS:
            return (
                f"channels[{index}].name: the bme280 conversion gives"
                f" {', '.join(_BME280_CHANNELS)}, not {channel.name!r}"
            )
    return ""


CONVERSIONS: dict[str, Conversion] = {
    "linear": Conversion(_linear, _check_linear),
    "bme280": Conversion(_bme280, _check_bme280),
}
