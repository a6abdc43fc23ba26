"""Listen-only serial instruments: frames sent unasked become samples (issue 8, item 4).

A thermo-hygrometer that prints a line every 200 ms, and an MT-SICS balance
in continuous mode (`SIR`), both simulated on real ptys.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.agent import (
    Agent,
    AgentConfig,
    DriverError,
    InstrumentConfig,
    InstrumentError,
    NoAnswer,
    PortError,
)
from kleinmaelzung.agent.drivers import serial_line
from kleinmaelzung.agent.drivers.line_profiles import compile_patterns
from kleinmaelzung.agent.drivers.line_stream import StreamLines
from kleinmaelzung.agent.drivers.serial_line import SerialLineDriver, load_profile
from kleinmaelzung.hub import RunningHub
from kleinmaelzung.protocol import Timeouts
from kleinmaelzung.sim import Balance, Simulator, StreamingHygrometer

from ..hub.peers import raw_client
from .test_agent import link

DEADLINE_S = 15.0
HYGRO = "hygro-floor"
BALANCE = "balance-filler"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator([HYGRO, BALANCE], seed=4) as simulator:
        yield simulator


def hygrometer(sim: Simulator, **options: Any) -> SerialLineDriver:
    return SerialLineDriver(
        InstrumentConfig(
            id=HYGRO, profile="kmz-hygrometer-stream", port=sim.paths[HYGRO], **options
        )
    )


def balance(sim: Simulator, **options: Any) -> SerialLineDriver:
    return SerialLineDriver(
        InstrumentConfig(
            id=BALANCE, profile="mt-sics-balance-stream", port=sim.paths[BALANCE], **options
        )
    )


async def first_failure(driver: SerialLineDriver, tries: int = 5) -> DriverError:
    """The first error of up to `tries` reads (frames sent before a fault may come first)."""
    for _ in range(tries):
        try:
            await driver.read()
        except DriverError as exc:
            return exc
    raise AssertionError(f"{tries} reads succeeded")


@pytest.fixture
async def hygro(sim: Simulator) -> AsyncIterator[SerialLineDriver]:
    driver = hygrometer(sim, reply_timeout_s=0.6)
    await driver.open()
    yield driver
    await driver.close()


def test_the_streaming_profiles_load() -> None:
    for name in ("kmz-hygrometer-stream", "mt-sics-balance-stream"):
        profile = load_profile(name)
        assert profile.stream is not None
        assert profile.poll is None


async def test_polled_faster_than_it_sends_every_frame_is_one_reading(
    hygro: SerialLineDriver,
) -> None:
    assert hygro.identity is not None
    assert hygro.identity.startswith("Kleinmaelzung,TH-30,")
    started = time.monotonic()
    readings = [await hygro.read() for _ in range(6)]
    elapsed = time.monotonic() - started
    for values in readings:
        assert 12 <= values["temperature"] <= 20  # type: ignore[operator]
        assert 85 <= values["humidity"] <= 100  # type: ignore[operator]
    # Paced by the instrument (a frame every 0.2 s), never a frame twice: the
    # first may have been waiting, the other five took about a second.
    assert elapsed >= 0.5, elapsed
    assert hygro.stream.frames_superseded == 0
    assert hygro.stream.frames_received >= 6


async def test_polled_slower_than_it_sends_each_reading_is_the_newest_frame(
    sim: Simulator, hygro: SerialLineDriver
) -> None:
    await hygro.read()
    received = hygro.stream.frames_received
    # Three frames arrive meanwhile; wait for them by the driver's own count.
    async with asyncio.timeout(DEADLINE_S):
        while hygro.stream.frames_received < received + 3:  # noqa: ASYNC110 - counted by the driver
            await asyncio.sleep(0.05)
    started = time.monotonic()
    await hygro.read()
    assert time.monotonic() - started < 0.15, "a waiting frame is returned at once"
    assert hygro.stream.frames_superseded >= 2


async def test_garbled_lines_are_skipped_and_only_fault_when_nothing_good_comes(
    sim: Simulator, hygro: SerialLineDriver
) -> None:
    sim.set_garbled(HYGRO, True)
    skipped = hygro.stream.lines_skipped
    # Frames that came before the noise may still be read first.
    failure = await first_failure(hygro)
    assert isinstance(failure, InstrumentError)
    assert re.match(r"no frame within 0.6 s: \d+ line\(s\) did not match", str(failure))
    assert hygro.stream.lines_skipped > skipped
    sim.set_garbled(HYGRO, False)
    assert "humidity" in await hygro.read()


async def test_a_silent_stream_is_no_answer(sim: Simulator, hygro: SerialLineDriver) -> None:
    sim.set_silent(HYGRO, True)
    failure = await first_failure(hygro)
    assert isinstance(failure, NoAnswer)
    assert str(failure) == "no frame within 0.6 s"
    sim.set_silent(HYGRO, False)
    assert "temperature" in await hygro.read()


async def test_the_balance_streams_after_start_and_stops_on_close(sim: Simulator) -> None:
    model = sim.model(BALANCE)
    assert isinstance(model, Balance)
    assert not model.streaming
    driver = balance(sim)
    await driver.open()
    try:
        assert driver.identity == f'I4 A "{model.serial}"'
        values = await driver.read()
        assert values["mass"] == pytest.approx(12.345, abs=0.01)
        assert values["stable"] is True
        assert model.streaming
    finally:
        await driver.close()
    async with asyncio.timeout(DEADLINE_S):  # the simulator takes the stop command in its thread
        while model.streaming:  # noqa: ASYNC110 - the model has no event
            await asyncio.sleep(0.02)


async def test_tare_while_streaming_tells_its_reply_from_the_weight_lines(sim: Simulator) -> None:
    driver = balance(sim)
    await driver.open()
    try:
        await driver.read()
        assert await driver.execute("tare", {}) == {"tare": pytest.approx(12.345, abs=0.01)}
        # The stream went on meanwhile; readings now show the net weight.
        for _ in range(3):
            await driver.read()
        assert (await driver.read())["mass"] == pytest.approx(0.0, abs=0.01)
        model = sim.model(BALANCE)
        assert isinstance(model, Balance)
        model.place(20.0, time.monotonic())  # just placed: not stable
        with pytest.raises(InstrumentError, match="not stable: tare was not possible"):
            await driver.execute("tare", {})
        assert driver.stream.frames_received > 0
    finally:
        await driver.close()


async def test_overload_in_the_stream_is_an_instrument_error_at_once(sim: Simulator) -> None:
    model = sim.model(BALANCE)
    assert isinstance(model, Balance)
    driver = balance(sim)
    await driver.open()
    try:
        await driver.read()
        model.emit = lambda now: ["S +"]  # type: ignore[method-assign]
        failure = await first_failure(driver)
        assert isinstance(failure, InstrumentError)
        assert str(failure) == "overload (instrument answered 'S +')"
    finally:
        await driver.close()


async def test_an_instrument_already_streaming_is_identified_among_its_frames(
    sim: Simulator,
) -> None:
    first = balance(sim)
    await first.open()
    await first.read()
    # Gone without a goodbye (the agent was killed): the balance streams on.
    transport = first._transport
    assert transport is not None
    transport.abort()
    first._transport = first._receiver = None
    model = sim.model(BALANCE)
    assert isinstance(model, Balance)
    assert model.streaming
    second = balance(sim)
    await second.open()
    try:
        assert second.identity == f'I4 A "{model.serial}"'
        assert "mass" in await second.read()
    finally:
        await second.close()


async def test_another_instrument_on_a_streaming_port_is_refused(sim: Simulator) -> None:
    sim.unplug(HYGRO)
    path = sim.replug(HYGRO, as_kind="thermometer")
    driver = SerialLineDriver(
        InstrumentConfig(id=HYGRO, profile="kmz-hygrometer-stream", port=path, reply_timeout_s=0.5)
    )
    with pytest.raises(PortError, match=r"wrong instrument: \*IDN\? answered 'Kleinmaelzung,T-10,"):
        await driver.open()
    assert driver.identity is not None
    assert driver.identity.startswith("Kleinmaelzung,T-10,")


def test_the_simulated_hygrometer_sends_a_frame_every_200_ms() -> None:
    import random

    model = StreamingHygrometer("SN9", random.Random(1))
    sent = [t / 100 for t in range(0, 101, 5) if model.emit(t / 100)]
    assert len(sent) == 5  # in one second, one frame per 0.2 s
    assert model.handle("*IDN?", 0.0) == "Kleinmaelzung,TH-30,SN9,1.3"
    assert model.handle("MEAS?", 0.0) == ""


# --- through the hub ----------------------------------------------------------------


@pytest.fixture
async def agent(hub: RunningHub, sim: Simulator) -> AsyncIterator[Agent]:
    config = AgentConfig(
        hub=hub.url,
        agent_id="test-pi",
        instruments=[
            InstrumentConfig(
                id=HYGRO,
                profile="kmz-hygrometer-stream",
                port=sim.paths[HYGRO],
                poll_interval_s=0.01,  # faster than it sends: every frame is a sample
                reply_timeout_s=0.6,
            ),
            InstrumentConfig(
                id=BALANCE,
                profile="mt-sics-balance-stream",
                port=sim.paths[BALANCE],
                poll_interval_s=0.01,
            ),
        ],
    )
    running = Agent(config, timeouts=Timeouts(reconnect_max_s=0.5))
    task = asyncio.create_task(running.run())
    await asyncio.wait_for(running.link.connected.wait(), DEADLINE_S)
    yield running
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_full_path_frames_a_command_and_a_garbled_stream_that_faults(
    hub: RunningHub, sim: Simulator, agent: Agent
) -> None:
    async with raw_client(hub.url) as client:
        await client.send({"type": "subscribe", "id": "s", "patterns": [HYGRO, BALANCE]})
        await client.receive_type("subscribed")
        samples: dict[str, list[dict[str, Any]]] = {HYGRO: [], BALANCE: []}
        async with asyncio.timeout(DEADLINE_S):
            while len(samples[HYGRO]) < 5 or len(samples[BALANCE]) < 5:
                data = await client.receive_type("data")
                for sample in data["samples"]:
                    samples[sample["instrument"]].append(sample)
        seqs = [s["seq"] for s in samples[HYGRO]]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert set(samples[HYGRO][0]["values"]) == {"temperature", "humidity"}
        # The instrument sets the pace: a frame every 0.2 s, however fast the agent polls.
        driver = agent.runners[HYGRO].driver
        assert isinstance(driver, SerialLineDriver)
        assert driver.stream is not None
        assert driver.stream.frames_received >= len(samples[HYGRO])
        await client.send(
            {"type": "command", "id": "t", "instrument": BALANCE, "name": "tare", "args": {}}
        )
        reply = await client.receive_type("reply", timeout=DEADLINE_S)
        assert reply["ok"], reply
        assert reply["result"]["tare"] == pytest.approx(12.345, abs=0.01)
        sim.set_garbled(HYGRO, True)
        status = await status_of(client, HYGRO, "faulted")
        assert "did not match the stream pattern" in status["reason"], status
        sim.set_garbled(HYGRO, False)
        await status_of(client, HYGRO, "online")


async def status_of(client: Any, instrument: str, state: str) -> dict[str, Any]:
    """The next status of `instrument` in `state`; other messages are skipped."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            message = await client.receive()
            if (message["type"], message.get("instrument"), message.get("state")) == (
                "status",
                instrument,
                state,
            ):
                return message


def test_a_profile_with_both_poll_and_stream_is_refused(tmp_path: Path) -> None:
    profile = tmp_path / "both.toml"
    profile.write_text(
        'name = "both"\nkind = "x"\n'
        "[poll]\nquery = \"MEAS?\"\npattern = '^(?P<t>.*)$'\n"
        "[stream]\npattern = '^(?P<t>.*)$'\n"
        '[[channels]]\nname = "t"\n',
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"either \[poll\] .* or \[stream\], not both"):
        load_profile(str(profile))


async def test_a_slow_instrument_gets_the_stream_timeout_not_the_reply_timeout(
    sim: Simulator, tmp_path: Path
) -> None:
    shipped = Path(serial_line.__file__).parent / "profiles" / "kmz-hygrometer-stream.toml"
    profile = tmp_path / "slow-logger.toml"
    profile.write_text(
        shipped.read_text(encoding="utf-8").replace("[stream]\n", "[stream]\ntimeout_s = 0.8\n"),
        encoding="utf-8",
    )
    driver = SerialLineDriver(
        InstrumentConfig(id=HYGRO, profile=str(profile), port=sim.paths[HYGRO], reply_timeout_s=0.3)
    )
    await driver.open()
    try:
        assert "humidity" in await driver.read()
        sim.set_silent(HYGRO, True)
        failure = await first_failure(driver)
        assert str(failure) == "no frame within 0.8 s"
    finally:
        await driver.close()


async def test_a_streaming_balance_unplugged_and_replugged_streams_again(
    hub: RunningHub, sim: Simulator, tmp_path: Path
) -> None:
    by_id = link(tmp_path, "usb-balance", sim.paths[BALANCE])
    config = AgentConfig(
        hub=hub.url,
        agent_id="test-pi",
        instruments=[
            InstrumentConfig(
                id=BALANCE,
                profile="mt-sics-balance-stream",
                port=by_id,
                poll_interval_s=0.02,
                reply_timeout_s=0.5,
            )
        ],
    )
    running = Agent(config, timeouts=Timeouts(reconnect_max_s=0.5))
    task = asyncio.create_task(running.run())
    try:
        async with raw_client(hub.url) as client:
            await client.send({"type": "subscribe", "id": "s", "patterns": [BALANCE]})
            await client.receive_type("subscribed")
            await client.receive_type("data", timeout=DEADLINE_S)
            sim.unplug(BALANCE)
            await status_of(client, BALANCE, "faulted")
            model = sim.model(BALANCE)
            assert isinstance(model, Balance)
            model.streaming = False  # as if it had been switched off and on meanwhile
            link(tmp_path, "usb-balance", sim.replug(BALANCE))
            await status_of(client, BALANCE, "online")
            data = await client.receive_type("data", timeout=DEADLINE_S)
            assert data["samples"][0]["values"]["mass"] == pytest.approx(12.345, abs=0.01)
            assert model.streaming, "the start command went out again on reopen"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_stream_lines_keep_the_newest_frame_and_count_the_rest() -> None:
    """The one-slot store on its own, line by line, no port."""
    profile = load_profile("mt-sics-balance-stream")
    ((_, frame),) = compile_patterns(profile)
    lines = StreamLines(frame, lambda line: line in profile.errors)
    lines.reset()
    for line in ["  1.234 g", "S S      1.000 g", "", "S D      2.000 g", "S S 3.0.0 g"]:
        lines.add(line)
    assert lines.take() == ("frame", {"mass": 2.0, "stable": False})
    assert lines.take() is None
    assert (lines.frames_received, lines.frames_superseded) == (2, 1)
    assert (lines.lines_skipped, lines.last_other) == (2, "S S 3.0.0 g")
    lines.add("S S      4.000 g")
    lines.add("S +")
    assert lines.take() == ("error", "S +"), "an error after a frame is the newest news"
