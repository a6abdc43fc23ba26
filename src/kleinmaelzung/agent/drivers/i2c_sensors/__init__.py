"""The sensors the I2C driver knows: how each is probed, measured and its answer converted.

Each sensor is a `Sensor` over the `I2cBus` interface; the arithmetic
(CRC-8, conversions, BME280 compensation) is pure and tested on its own.
"""

from .base import I2cBus, Sensor
from .bme280 import Bme280, Bme280Calibration, bme280_compensate
from .sht3x import Sht3x, crc8, sht3x_humidity, sht3x_temperature_c, sht3x_words

__all__ = [
    "Bme280",
    "Bme280Calibration",
    "I2cBus",
    "Sensor",
    "Sht3x",
    "bme280_compensate",
    "crc8",
    "sht3x_humidity",
    "sht3x_temperature_c",
    "sht3x_words",
]
