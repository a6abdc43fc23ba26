"""The I2C driver: sensor maps, SHT3x and BME280 arithmetic, the simulator, and the full path."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.agent import Agent, AgentConfig, ConfigError, InstrumentConfig
from kleinmaelzung.agent.config import check_config
from kleinmaelzung.agent.drivers import InstrumentError, NoAnswer, PortError, SettingsError
from kleinmaelzung.agent.drivers.i2c import I2cDriver
from kleinmaelzung.agent.drivers.i2c_sensors import (
    CONVERSIONS,
    Bme280Calibration,
    Sensor,
    bme280_compensate,
    builtin_maps,
    crc8,
    load_map,
    strip_crc,
)
from kleinmaelzung.hub import RunningHub
from kleinmaelzung.protocol import Timeouts
from kleinmaelzung.sim import i2c as sim_i2c

from ..hub.peers import raw_client

DEADLINE_S = 10.0


def i2c_config(**settings: Any) -> InstrumentConfig:
    return InstrumentConfig(
        id="germ-air",
        driver="i2c",
        poll_interval_s=0.05,
        settings={"sensor": "sht3x", "address": 0x44, "simulated": True, **settings},
    )


# --- SHT3x arithmetic ----------------------------------------------------------


def test_crc_of_the_datasheet_example() -> None:
    # SHT3x datasheet, table 19: CRC of 0xBEEF is 0x92.
    assert crc8(b"\xbe\xef") == 0x92
    assert sim_i2c.crc8(b"\xbe\xef") == 0x92  # the simulator's own, independent one


def test_a_crc_of_another_rule_is_the_maps_to_declare() -> None:
    # The HTU21D's rule (and the SHT2x's): the same polynomial, initial value 0;
    # the examples of the HTU21D(F) datasheet.
    assert [crc8(data, 0x31, 0x00) for data in (b"\xdc", b"\x68\x3a", b"\x4e\x85")] == [
        0x79,
        0x7C,
        0x6B,
    ]


@pytest.mark.parametrize(
    ("raw", "temperature_c", "humidity"),
    [(0, -45.0, 0.0), (0xFFFF, 130.0, 100.0), (0x6666, 25.0, 40.0)],
)
def test_sht3x_linear_conversion_of_raw_values(
    raw: int, temperature_c: float, humidity: float
) -> None:
    # Datasheet 4.13: T = -45 + 175 * S / 65535, RH = 100 * S / 65535, as the map declares them.
    sht3x = load_map("sht3x")
    convert = CONVERSIONS["linear"].prepare(sht3x, [])
    values = convert(raw.to_bytes(2, "big") * 2)
    assert values["temperature"] == pytest.approx(temperature_c, abs=1e-3)
    assert values["humidity"] == pytest.approx(humidity, abs=1e-3)


def test_words_are_checked_and_a_crc_mismatch_names_the_word() -> None:
    assert strip_crc(b"\xbe\xef\x92\x00\x00\x81", "measurement") == b"\xbe\xef\x00\x00"
    with pytest.raises(InstrumentError, match=r"measurement: CRC mismatch in word 1 \(0x0000\)"):
        strip_crc(b"\xbe\xef\x92\x00\x00\x80", "measurement")
    with pytest.raises(InstrumentError, match="answer of 5 bytes"):
        strip_crc(b"\xbe\xef\x92\x00\x00", "measurement")


# --- BME280 arithmetic ---------------------------------------------------------

#: The worked example of the BMP280 datasheet (section 3.12), whose temperature
#: and pressure formulas are the BME280's: 25.08 °C, t_fine 128422, 100653.27 Pa.
WORKED = Bme280Calibration(
    t=(27504, 26435, -1000),
    p=(36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000),
    h=(75, 362, 0, 313, 50, 30),
)


def test_bme280_temperature_and_pressure_match_the_datasheet_worked_values() -> None:
    temperature, pressure, _, t_fine = bme280_compensate(WORKED, 519888, 415148, 30000)
    assert (temperature, t_fine) == (2508, 128422)
    # The datasheet's value comes from its floating-point formula; the 64-bit
    # integer one (Pa/256) agrees to a few hundredths of a pascal.
    assert pressure / 256 == pytest.approx(100653.27, abs=0.05)


def _humidity_by_the_datasheet_double_formula(h: tuple[int, ...], t_fine: int, adc_h: int) -> float:
    h1, h2, h3, h4, h5, h6 = h
    var_h = t_fine - 76800.0
    var_h = (adc_h - (h4 * 64.0 + h5 / 16384.0 * var_h)) * (
        h2 / 65536.0 * (1.0 + h6 / 67108864.0 * var_h * (1.0 + h3 / 67108864.0 * var_h))
    )
    var_h = var_h * (1.0 - h1 * var_h / 524288.0)
    return min(max(var_h, 0.0), 100.0)


@pytest.mark.parametrize("adc_h", [0, 20000, 30000, 40000, 65535])
def test_bme280_humidity_agrees_with_the_datasheet_floating_point_formula(adc_h: int) -> None:
    _, _, humidity, t_fine = bme280_compensate(WORKED, 519888, 415148, adc_h)
    expected = _humidity_by_the_datasheet_double_formula(WORKED.h, t_fine, adc_h)
    assert humidity / 1024 == pytest.approx(expected, abs=0.01)


def test_bme280_calibration_from_its_registers() -> None:
    device = sim_i2c.Bme280()
    low, high = bytes(device.registers[0x88:0xA2]), bytes(device.registers[0xE1:0xE8])
    assert Bme280Calibration.from_registers(low, high) == WORKED
    # dig_H4 and dig_H5 are 12-bit and signed: -7 and -300 share register 0xE5.
    negative = bytes([0, 0, 0, (-7 >> 4) & 0xFF, ((-300 & 0x0F) << 4) | (-7 & 0x0F), 0xED, 0])
    assert Bme280Calibration.from_registers(low, negative).h[3:5] == (-7, -300)


# --- the driver on the simulator -----------------------------------------------


async def test_sht3x_reading_through_the_driver() -> None:
    driver = I2cDriver(i2c_config())
    device = driver.simulator.devices[0x44]
    device.temperature_c, device.humidity = 17.25, 63.5
    await driver.open()
    try:
        assert await driver.read() == {
            "temperature": pytest.approx(17.25, abs=0.01),
            "humidity": pytest.approx(63.5, abs=0.01),
        }
        info = driver.info()
        assert [(c.name, c.unit) for c in info.channels] == [
            ("temperature", "°C"),
            ("humidity", "%RH"),
        ]
        assert await driver.execute("heater", {"on": True}) == {"on": True}
        assert device.heater
        assert await driver.execute("heater", {"on": False}) == {"on": False}
        assert not device.heater
    finally:
        await driver.close()
        await driver.close()  # idempotent


async def test_a_corrupted_crc_is_an_instrument_error_naming_it() -> None:
    driver = I2cDriver(i2c_config())
    await driver.open()
    try:
        driver.simulator.devices[0x44].corrupt_crc = True
        with pytest.raises(InstrumentError, match=r"CRC mismatch in word 0"):
            await driver.read()
        driver.simulator.devices[0x44].corrupt_crc = False
        assert "temperature" in await driver.read()
    finally:
        await driver.close()


async def test_nothing_at_the_address_is_a_port_error_on_open_and_no_answer_later() -> None:
    driver = I2cDriver(i2c_config(address=0x45))
    driver.simulator.devices.clear()
    with pytest.raises(PortError, match=r"/dev/i2c-1@0x45: no sht3x answered"):
        await driver.open()
    with pytest.raises(PortError, match="not open"):
        await driver.read()
    driver.simulator.devices[0x45] = sim_i2c.Sht3x()
    await driver.open()
    try:
        del driver.simulator.devices[0x45]  # unplugged while running
        with pytest.raises(NoAnswer, match=r"0x45: no answer"):
            await driver.read()
    finally:
        await driver.close()


async def test_bme280_reading_through_the_driver() -> None:
    driver = I2cDriver(i2c_config(sensor="bme280", address=0x76))
    await driver.open()
    try:
        values = await driver.read()
        assert values["temperature"] == 25.08
        assert values["pressure"] == pytest.approx(1006.5327, abs=0.001)
        assert 0 < values["humidity"] < 100  # type: ignore[operator]
        assert driver.simulator.devices[0x76].measurements == 1  # forced mode, one each read
        assert [c.name for c in driver.info().channels] == ["temperature", "humidity", "pressure"]
        assert driver.info().commands == []
    finally:
        await driver.close()


async def test_a_bmp280_at_the_address_is_refused_for_having_no_humidity() -> None:
    driver = I2cDriver(i2c_config(sensor="bme280", address=0x77))
    device = sim_i2c.Bme280()
    device.registers[0xD0] = 0x58
    driver.simulator.devices = {0x77: device}
    with pytest.raises(PortError, match=r"0x77: a BMP280 \(chip id 0x58\) answered: no humidity"):
        await driver.open()
    device.registers[0xD0] = 0x61
    with pytest.raises(PortError, match=r"wrong sensor: chip id 0x61, expected 0x60 \(bme280\)"):
        await driver.open()
    assert driver.identity is None


async def test_a_bus_that_does_not_exist_is_a_port_error_naming_it(tmp_path: Path) -> None:
    # Real smbus2 on real files: this machine has no I2C adapter 99, and a plain
    # file (like a serial port given by mistake) refuses the adapter's ioctl.
    driver = I2cDriver(i2c_config(simulated=False, bus="/dev/i2c-99"))
    with pytest.raises(PortError, match=r"/dev/i2c-99@0x44: no such I2C bus"):
        await driver.open()
    not_a_bus = tmp_path / "ttyUSB0"
    not_a_bus.write_bytes(b"")
    wrong = I2cDriver(i2c_config(simulated=False, bus=str(not_a_bus)))
    with pytest.raises(PortError, match=r"ttyUSB0@0x44: not an I2C adapter"):
        await wrong.open()
    files_open = len(os.listdir("/proc/self/fd"))
    for _ in range(5):  # reopened with backoff, a refused file must not pile up
        with pytest.raises(PortError):
            await wrong.open()
    assert len(os.listdir("/proc/self/fd")) == files_open
    await wrong.close()


def test_the_driver_loads_and_simulates_without_smbus2_and_names_the_extra() -> None:
    code = (
        "import sys, asyncio\n"
        "sys.modules['smbus2'] = None  # not installed\n"
        "from kleinmaelzung.agent.drivers.i2c import I2cDriver\n"
        "from kleinmaelzung.agent import InstrumentConfig\n"
        "settings = {'sensor': 'sht3x', 'address': 0x44, 'simulated': True}\n"
        "d = I2cDriver(InstrumentConfig(id='t', driver='i2c', settings=settings))\n"
        "real = I2cDriver(InstrumentConfig(id='r', driver='i2c', settings={**settings,"
        " 'simulated': False}))\n"
        "async def main():\n"
        "    await d.open(); print(sorted(await d.read())); await d.close()\n"
        "    try:\n"
        "        await real.open()\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__, exc)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    simulated, real = result.stdout.strip().splitlines()
    assert simulated == "['humidity', 'temperature']"
    # A config for a real bus says what to install, when it opens.
    assert real == (
        "PortError /dev/i2c-1@0x44: smbus2 is not installed: pip install 'kleinmaelzung[i2c]'"
    )


# --- settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "key", "says"),
    [
        ({"address": 0x80}, "settings.address", "<= 119"),
        ({"address": "0x44"}, "settings.address", "expected `int`"),
        ({"address": 0x40}, "settings.address", "a sht3x answers at 0x44 or 0x45, not 0x40"),
        (
            {"sensor": "sht4x"},
            "settings.sensor",
            "unknown I2C sensor map 'sht4x'; built in: bme280, sht3x",
        ),
        (
            {"sensor": "bme280", "address": None, "mode": "high"},
            "settings.mode",
            "no measuring modes",
        ),
        ({"mode": "best"}, "settings.mode", "measures in 'high', 'medium', 'low', not 'best'"),
        ({"adress": 0x44}, "settings.adress", "unknown key"),
        ({"bus": 1.5}, "settings.bus", "expected `int | str`"),
    ],
)
def test_settings_errors_name_the_key(settings: dict[str, Any], key: str, says: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(says)) as caught:
        I2cDriver.check_config(i2c_config(**settings))
    assert caught.value.key == key


def test_the_address_defaults_to_the_maps_first() -> None:
    bme280 = I2cDriver(InstrumentConfig(id="b", driver="i2c", settings={"sensor": "bme280"}))
    assert bme280.where == "/dev/i2c-1@0x76"


def test_a_missing_sensor_is_named_with_file_and_instrument() -> None:
    config = AgentConfig(
        hub="http://127.0.0.1:1",
        agent_id="pi",
        instruments=[InstrumentConfig(id="germ-air", driver="i2c", settings={"address": 0x44})],
    )
    with pytest.raises(
        ConfigError,
        match=r"^agent.toml: instruments\[0\].settings.sensor: required key is missing",
    ):
        check_config(config, source="agent.toml", drivers={"i2c": I2cDriver})


# --- the maps ------------------------------------------------------------------


def test_the_shipped_maps_load() -> None:
    assert builtin_maps() == ["bme280", "sht3x"]
    sht3x, bme280 = load_map("sht3x"), load_map("bme280")
    assert (sht3x.addresses, sht3x.crc is not None, sht3x.conversion) == (
        [0x44, 0x45],
        True,
        "linear",
    )
    assert (bme280.identify.register, bme280.identify.expect) == (0xD0, 0x60)
    assert bme280.conversion == "bme280"


SHT3X_MAP = (
    Path(__file__).parents[2] / "src/kleinmaelzung/agent/drivers/i2c_maps/sht3x.toml"
).read_text()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            ('conversion = "linear"', 'conversion = "magic"'),
            "conversion: unknown 'magic'; known: linear, bme280",
        ),
        (("word = 1", "word = 2"), "channels[1].word: 2, but a measurement holds 2 words"),
        (
            ("read = 6", "read = 5"),
            "measure.modes.high: read: 5 bytes, but with a CRC an answer is words of 3",
        ),
        (('mode = "high"', 'mode = "best"'), "measure.mode: expected one of high, medium, low"),
        (
            ("[identify]\ncommand", "[identify]\nregister = 0x00\ncommand"),
            "identify: expected a command or a register",
        ),
        (("addresses = [0x44, 0x45]", "addresses = [0x44, 0x99]"), "addresses[1]"),
    ],
)
def test_a_wrong_map_is_named_with_its_file_and_entry(
    change: tuple[str, str], says: str, tmp_path: Path
) -> None:
    path = tmp_path / "mine.toml"
    assert change[0] in SHT3X_MAP
    path.write_text(SHT3X_MAP.replace(change[0], change[1], 1))
    with pytest.raises(SettingsError, match=re.escape(says)) as caught:
        I2cDriver.check_config(i2c_config(sensor=str(path), simulated=False))
    assert caught.value.key == "settings.sensor"
    assert str(path) in str(caught.value)


#: A sensor the project never heard of, of a kind it knows: Sensirion's SHT4x
#: (datasheet 4.5: command 0xFD, 8.3 ms; RH = -6 + 125 * S / 65535), as a lab would write it.
SHT4X_MAP = """
kind = "sht4x"
addresses = [0x44]
[crc]
polynomial = 0x31
init = 0xFF
[identify]
command = [0x89]   # read serial number
read = 6
[measure]
command = [0xFD]
wait_s = 0.0083
read = 6
[[channels]]
name = "temperature"
unit = "°C"
word = 0
offset = -45.0
span = 175.0
[[channels]]
name = "humidity"
unit = "%RH"
word = 1
offset = -6.0
span = 125.0
"""


class SimulatedSht4x(sim_i2c.Device):
    """An SHT4x as its datasheet describes it: one-byte commands, words with CRCs."""

    def __init__(self) -> None:
        self.answer = b""

    def write(self, data: bytes) -> None:
        words = {0x89: (0x1234, 0x5678), 0xFD: (0x6666, 0x8000)}[data[0]]
        self.answer = b"".join(
            w.to_bytes(2, "big") + bytes([sim_i2c.crc8(w.to_bytes(2, "big"))]) for w in words
        )

    def read(self, length: int) -> bytes:
        return self.answer[:length]


def test_a_similar_sensor_takes_a_map_not_a_fork(tmp_path: Path) -> None:
    path = tmp_path / "sht4x.toml"
    path.write_text(SHT4X_MAP)
    sensor = Sensor(load_map(str(path)), 0x44, "test@0x44")
    bus = sim_i2c.SimulatedBus({0x44: SimulatedSht4x()})
    sensor.probe(bus)
    assert sensor.identity == "sht4x"
    assert sensor.measure(bus) == {"temperature": 25.0, "humidity": 56.5}


class RecordingBus(sim_i2c.SimulatedBus):
    """A simulated bus that keeps what was written to it."""

    def __init__(self, devices: dict[int, sim_i2c.Device]) -> None:
        super().__init__(devices)
        self.written: list[bytes] = []

    def write(self, address: int, data: bytes) -> None:
        self.written.append(bytes(data))
        super().write(address, data)


@pytest.mark.parametrize(("mode", "command"), [("", b"\x24\x00"), ("low", b"\x24\x16")])
def test_the_mode_picks_the_maps_measuring_command(mode: str, command: bytes) -> None:
    sensor = Sensor(load_map("sht3x"), 0x44, "test@0x44", mode)
    bus = RecordingBus({0x44: sim_i2c.Sht3x(temperature_c=21.5)})
    sensor.probe(bus)
    assert sensor.measure(bus)["temperature"] == pytest.approx(21.5, abs=0.01)
    assert bus.written == [b"\xf3\x2d", command]  # the status read, then the measurement


async def test_identity_is_what_answered_once_opened() -> None:
    sht3x = I2cDriver(i2c_config())
    bme280 = I2cDriver(i2c_config(sensor="bme280", address=None))
    assert (sht3x.identity, bme280.identity) == (None, None)
    for driver in (sht3x, bme280):
        await driver.open()
        await driver.close()
    assert (sht3x.identity, bme280.identity) == ("sht3x", "bme280 (chip id 0x60)")


# --- the full path -------------------------------------------------------------


async def test_full_path_reading_command_and_a_corrupted_crc_faults_it_at_the_hub(
    hub: RunningHub,
) -> None:
    config = AgentConfig(hub=hub.url, agent_id="germ-pi", instruments=[i2c_config()])
    agent = Agent(config, timeouts=Timeouts(reconnect_max_s=0.5), drivers={"i2c": I2cDriver})
    device = agent.runners["germ-air"].driver.simulator.devices[0x44]  # type: ignore[attr-defined]
    device.temperature_c, device.humidity = 14.5, 92.0
    task = asyncio.create_task(agent.run())
    try:
        async with raw_client(hub.url) as client:
            await client.send({"type": "subscribe", "id": "s", "patterns": ["germ-air"]})
            await client.receive_type("subscribed")
            data = await client.receive_type("data", timeout=DEADLINE_S)
            sample = data["samples"][0]
            assert sample["instrument"] == "germ-air"
            assert sample["values"] == {
                "temperature": pytest.approx(14.5, abs=0.01),
                "humidity": pytest.approx(92.0, abs=0.01),
            }
            await client.send(
                {
                    "type": "command",
                    "id": "h",
                    "instrument": "germ-air",
                    "name": "heater",
                    "args": {"on": True},
                }
            )
            reply = await client.receive_type("reply", timeout=DEADLINE_S)
            assert (reply["id"], reply["ok"], reply["result"]) == ("h", True, {"on": True})

            device.corrupt_crc = True
            while True:
                status = await client.receive_type("status", timeout=DEADLINE_S)
                if status["state"] == "faulted":
                    break
            assert "CRC mismatch" in status["reason"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
