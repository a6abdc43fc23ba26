"""The arithmetic of the Bosch BME280: its trimming values and the datasheet's compensation.

The integer compensation of section 4.2.3, with the trimming values each
sensor holds in its registers (4.2.2). What to read and write, and when, is
the map's (`i2c_maps/bme280.toml`); this is the `conversion = "bme280"`.
"""

from __future__ import annotations

import struct

import msgspec

from ...errors import InstrumentError


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


#: A measurement that was skipped (or not yet taken) leaves the registers' reset values.
_SKIPPED_P_T, _SKIPPED_H = 0x80000, 0x8000


def bme280_values(calibration: Bme280Calibration, data: bytes) -> dict[str, float]:
    """Temperature (°C), humidity (%RH) and pressure (hPa) from the 8 data bytes at 0xF7.

    InstrumentError if the registers hold their reset values (no measurement).
    """
    adc_p = (data[0] << 12) | (data[1] << 4) | (data[2] >> 4)
    adc_t = (data[3] << 12) | (data[4] << 4) | (data[5] >> 4)
    adc_h = (data[6] << 8) | data[7]
    if _SKIPPED_P_T in (adc_t, adc_p) or adc_h == _SKIPPED_H:
        raise InstrumentError("measurement skipped (reset values read)")
    temperature, pressure, humidity, _ = bme280_compensate(calibration, adc_t, adc_p, adc_h)
    return {
        "temperature": temperature / 100,
        "humidity": humidity / 1024,
        "pressure": pressure / 25600,
    }
