"""I2C sensors: maps (TOML, in `i2c_maps/`), the arithmetic they name, the sensor they drive.

A map declares what a datasheet tabulates (addresses, identity, commands,
registers, timing, CRC rule, channels); `conversions.CONVERSIONS` holds the
arithmetic (linear words, the BME280's compensation), pure and tested on its
own; `Sensor` runs a map over the `I2cBus` interface.
"""

from .base import I2cBus
from .bme280 import Bme280Calibration, bme280_compensate, bme280_values
from .conversions import CONVERSIONS, Conversion
from .crc import crc8, strip_crc
from .maps import SensorMap, builtin_maps, load_map
from .sensor import Sensor

__all__ = [
    "CONVERSIONS",
    "Bme280Calibration",
    "Conversion",
    "I2cBus",
    "Sensor",
    "SensorMap",
    "bme280_compensate",
    "bme280_values",
    "builtin_maps",
    "crc8",
    "load_map",
    "strip_crc",
]
