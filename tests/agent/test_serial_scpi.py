"""SCPI over a plain serial line, and readings that take several queries (issue 8, item 4).

The `scpi-dmm-serial` profile against a simulated SCPI multimeter on a real pty:
settings that answer nothing are checked through `SYST:ERR?`, and a query
the meter does not know is named by its error, not taken for silence.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.agent import (
    Agent,
    AgentConfig,
    InstrumentConfig,
    InstrumentError,
    NoAnswer,
    PortError,
)
from kleinmaelzung.agent.drivers import serial_line
from kleinmaelzung.agent.drivers.serial_line import SerialLineDriver, load_profile
from kleinmaelzung.hub import RunningHub
from kleinmaelzung.protocol import Timeouts
from kleinmaelzung.sim import SerialMultimeter, Simulator

from ..hub.peers import raw_client

DEADLINE_S = 15.0
DMM = "dmm-bench"
SHIPPED = Path(serial_line.__file__).parent / "profiles" / "scpi-dmm-serial.toml"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator([DMM], seed=6) as simulator:
        yield simulator


def dmm_config(sim: Simulator, **options: Any) -> InstrumentConfig:
    return InstrumentConfig(
        id=DMM, profile="scpi-dmm-serial", port=sim.paths[DMM], reply_timeout_s=0.5, **options
    )


@pytest.fixture
async def dmm(sim: Simulator) -> AsyncIterator[SerialLineDriver]:
    driver = SerialLineDriver(dmm_config(sim))
    await driver.open()
    yield driver
    await driver.close()


def meter(sim: Simulator) -> SerialMultimeter:
    model = sim.model(DMM)
    assert isinstance(model, SerialMultimeter)
    return model


async def test_identify_and_read_the_voltage(sim: Simulator, dmm: SerialLineDriver) -> None:
    assert dmm.identity == f"KLEINMAELZUNG,KMZ-DMM-1,{meter(sim).serial},1.0"
    values = await dmm.read()
    assert values["voltage_dc"] == pytest.approx(12.0, abs=0.1)


async def test_a_setting_that_answers_nothing_is_checked_through_the_error_queue(
    dmm: SerialLineDriver,
) -> None:
    assert await dmm.execute("configure_voltage_dc", {"range": 10.0}) == {"range": 10.0}
    assert await dmm.execute("get_range", {}) == {"range": 10.0}
    with pytest.raises(InstrumentError, match=r"'CONF:VOLT:DC 7': instrument reported -222,"):
        await dmm.execute("configure_voltage_dc", {"range": 7.0})
    assert await dmm.execute("get_range", {}) == {"range": 10.0}
    assert await dmm.execute("reset", {}) == {}
    assert await dmm.execute("get_range", {}) == {"range": 100.0}


async def test_a_query_the_meter_does_not_know_is_named_by_its_error(
    sim: Simulator, tmp_path: Path
) -> None:
    profile = tmp_path / "freq.toml"
    profile.write_text(
        SHIPPED.read_text(encoding="utf-8").replace("MEAS:VOLT:DC?", "MEAS:FREQ?"), encoding="utf-8"
    )
    driver = SerialLineDriver(
        InstrumentConfig(id=DMM, profile=str(profile), port=sim.paths[DMM], reply_timeout_s=0.3)
    )
    await driver.open()
    try:
        with pytest.raises(InstrumentError, match=r"'MEAS:FREQ\?': instrument reported -113,"):
            await driver.read()
        sim.set_silent(DMM, True)  # no error to ask for either: plain silence
        with pytest.raises(NoAnswer, match=r"no answer to 'MEAS:FREQ\?' within 0.3 s"):
            await driver.read()
    finally:
        await driver.close()


async def test_a_reading_made_of_several_queries_is_one_sample(
    sim: Simulator, tmp_path: Path
) -> None:
    profile = tmp_path / "dc-and-ripple.toml"
    profile.write_text(
        """
name = "dc-and-ripple"
kind = "multimeter"
line_ending = "\\n"
identify = "*IDN?"
identity = '^KLEINMAELZUNG,'
error_query = "SYST:ERR?"

[[poll]]
query = "MEAS:VOLT:DC?"
pattern = '^(?P<voltage_dc>[-+]?[\\d.]+E[-+]\\d+)$'

[[poll]]
query = "MEAS:VOLT:AC?"
pattern = '^(?P<ripple>[-+]?[\\d.]+E[-+]\\d+)$'

[[channels]]
name = "voltage_dc"
unit = "V"

[[channels]]
name = "ripple"
unit = "V"
""",
        encoding="utf-8",
    )
    driver = SerialLineDriver(
        InstrumentConfig(id=DMM, profile=str(profile), port=sim.paths[DMM], reply_timeout_s=0.5)
    )
    await driver.open()
    try:
        values = await driver.read()
        assert set(values) == {"voltage_dc", "ripple"}
        assert values["voltage_dc"] == pytest.approx(12.0, abs=0.1)
        assert values["ripple"] == pytest.approx(0.015, abs=0.005)
        # A bad answer to either query spoils the whole reading, named by its query.
        model = meter(sim)
        original = model.handle
        model.handle = lambda line, now: (  # type: ignore[method-assign]
            "OVLD" if line == "MEAS:VOLT:AC?" else original(line, now)
        )
        with pytest.raises(InstrumentError, match=r"unexpected answer to 'MEAS:VOLT:AC\?': 'OVLD'"):
            await driver.read()
    finally:
        await driver.close()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "[[poll]]\nquery = \"A?\"\npattern = '^(?P<a>.*)$'\n"
            "[[poll]]\nquery = \"B?\"\npattern = '^(?P<a>.*)$'\n",
            r"channel\(s\) a in more than one poll pattern",
        ),
        (
            "[[poll]]\nquery = \"A?\"\npattern = '^(?P<b>.*)$'\n",
            r"no named group for channel\(s\) a",
        ),
        ("poll = []\n", r"\[\[poll\]\] needs at least one query"),
    ],
)
def test_a_broken_multi_query_profile_says_what_is_wrong(
    tmp_path: Path, text: str, says: str
) -> None:
    profile = tmp_path / "broken.toml"
    profile.write_text(
        f'name = "broken"\nkind = "x"\n{text}[[channels]]\nname = "a"\n', encoding="utf-8"
    )
    with pytest.raises(ValueError, match=says):
        load_profile(str(profile))


async def test_a_pinned_serial_number_refuses_another_meter(sim: Simulator) -> None:
    pinned = SerialLineDriver(dmm_config(sim, settings={"identity": meter(sim).serial}))
    await pinned.open()
    await pinned.close()
    other = SerialLineDriver(dmm_config(sim, settings={"identity": "MY99999"}))
    with pytest.raises(PortError, match=r"wrong instrument: \*IDN\? answered 'KLEINMAELZUNG,"):
        await other.open()


def test_the_simulated_meter_queues_errors_and_answers_settings_with_silence() -> None:
    model = SerialMultimeter("SN1", random.Random(1))
    assert model.handle("CONF:VOLT:DC 10", 0.0) == ""
    assert model.handle("CONF:VOLT:DC?", 0.0) == "+1.00000000E+01"
    assert model.handle("BOGUS?", 0.0) == ""
    assert model.handle("CONF:VOLT:DC 3", 0.0) == ""
    assert model.handle("SYST:ERR?", 0.0) == '-113,"Undefined header"'
    assert model.handle("SYST:ERR?", 0.0) == '-222,"Data out of range"'
    assert model.handle("SYST:ERR?", 0.0) == '+0,"No error"'


async def test_full_path_sample_command_and_a_garbled_answer_that_faults(
    hub: RunningHub, sim: Simulator
) -> None:
    config = AgentConfig(
        hub=hub.url,
        agent_id="bench-pi",
        instruments=[
            InstrumentConfig(
                id=DMM,
                profile="scpi-dmm-serial",
                port=sim.paths[DMM],
                poll_interval_s=0.1,
                reply_timeout_s=0.5,
            )
        ],
    )
    agent = Agent(config, timeouts=Timeouts(reconnect_max_s=0.5))
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.link.connected.wait(), DEADLINE_S)
        async with raw_client(hub.url) as client:
            await client.send({"type": "subscribe", "id": "s", "patterns": [DMM]})
            await client.receive_type("subscribed")
            data = await client.receive_type("data", timeout=DEADLINE_S)
            assert data["samples"][0]["values"]["voltage_dc"] == pytest.approx(12.0, abs=0.1)
            for id_, range_v in (("ok", 10), ("bad", 7)):
                await client.send(
                    {
                        "type": "command",
                        "id": id_,
                        "instrument": DMM,
                        "name": "configure_voltage_dc",
                        "args": {"range": range_v},
                    }
                )
                reply = await client.receive_type("reply", timeout=DEADLINE_S)
                assert reply["id"] == id_
                if id_ == "ok":
                    assert (reply["ok"], reply["result"]) == (True, {"range": 10}), reply
                else:
                    assert (reply["ok"], reply["error"]["code"]) == (False, "instrument_error")
                    assert "Data out of range" in reply["error"]["message"]
            sim.set_garbled(DMM, True)
            async with asyncio.timeout(DEADLINE_S):
                while True:
                    status = await client.receive_type("status")
                    if status["state"] == "faulted":
                        break
            assert "unexpected answer to 'MEAS:VOLT:DC?'" in status["reason"], status
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
