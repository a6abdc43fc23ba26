"""Broken drivers do not stop the agent: each fault stays with its instrument, seen at a real hub.

Issue 8: "every failure of any driver, of any exception type, makes that
instrument faulted with the reason at the hub and leaves the agent and the
other instruments running". test_runner.py has one buggy driver (ValueError
from read, KeyError from execute, OSError from its first opens) beside a
serial kiln. Here several broken instruments fail at once, each where and
how a real driver breaks: a library's own exception from open (pyserial's,
and a close that fails too), a KeyError from read, a library's exception
from read (struct's, decoding bytes) and from execute (pymodbus's), beside a
healthy sensor on a blocking bus thread; a client watches it all at the hub.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import serial
from pymodbus import ModbusException

from kleinmaelzung.agent import Agent, AgentConfig, InstrumentConfig
from kleinmaelzung.agent.drivers.i2c import I2cDriver
from kleinmaelzung.hub import RunningHub
from kleinmaelzung.protocol import Channel, CommandSpec, InstrumentInfo, Timeouts, Value

from ..hub.peers import RawPeer, raw_client

DEADLINE_S = 10.0

#: What a broken driver raises, by name: library exceptions as libraries raise them.
FAILURES: dict[str, Callable[[], Exception]] = {
    "SerialException": lambda: serial.SerialException(
        "device reports readiness to read but returned no data"
    ),
    "KeyError": lambda: KeyError("weight"),
    "struct.error": lambda: struct.error("unpack requires a buffer of 4 bytes"),
    "ValueError": lambda: ValueError("could not convert string to float: 'OVLD'"),
    "ModbusException": lambda: ModbusException("unexpected function code 0x83"),
    "BadModel": lambda: ValueError("no such scale model 'XS-9'"),
}


class BrokenDriver:
    """A driver that raises, in each of open, read, execute and close, what its settings name."""

    def __init__(self, config: InstrumentConfig) -> None:
        self.config = config
        self.raises: dict[str, str] = dict(config.settings)
        if "build" in self.raises:
            raise FAILURES[self.raises["build"]]()
        self.calls = dict.fromkeys(("open", "read", "execute", "close"), 0)

    @staticmethod
    def check_config(config: InstrumentConfig) -> None:
        """Any stage may be broken with any of FAILURES."""
        for stage, failure in config.settings.items():
            stages = ("build", "open", "read", "execute", "close")
            if stage not in stages or failure not in FAILURES:
                raise ValueError(f"settings.{stage}: cannot break with {failure!r}")

    def info(self) -> InstrumentInfo:
        return InstrumentInfo(
            id=self.config.id,
            kind="broken-scale",
            channels=[Channel(name="weight", unit="g")],
            commands=[CommandSpec(name="tare")],
        )

    def _call(self, stage: str) -> None:
        self.calls[stage] += 1
        failure = self.raises.get(stage)
        if failure is not None:
            raise FAILURES[failure]()

    async def open(self) -> None:
        self._call("open")

    async def read(self) -> dict[str, Value]:
        self._call("read")
        return {"weight": 1.0}

    async def execute(self, name: str, args: dict[str, Any]) -> Any:
        self._call("execute")
        return {}

    async def close(self) -> None:
        self._call("close")


def broken(instrument_id: str, **raises: str) -> InstrumentConfig:
    return InstrumentConfig(
        id=instrument_id, driver="broken", poll_interval_s=0.02, settings=dict(raises)
    )


async def command(client: RawPeer, instrument: str, id_: str) -> dict[str, Any]:
    """Send `tare` to `instrument`; its reply."""
    await client.send({"type": "command", "id": id_, "instrument": instrument, "name": "tare"})
    while True:
        reply = await client.receive_type("reply", timeout=DEADLINE_S)
        if reply["id"] == id_:
            return reply


async def samples_of(client: RawPeer, instrument: str, count: int) -> None:
    """Wait for `count` more samples of `instrument`."""
    seen = 0
    while seen < count:
        data = await client.receive_type("data", timeout=DEADLINE_S)
        seen += sum(1 for s in data["samples"] if s["instrument"] == instrument)


async def test_broken_drivers_fault_their_instruments_and_the_agent_and_the_others_go_on(
    hub: RunningHub,
) -> None:
    instruments = [
        # A library's exception on every open, and a close that fails as well.
        broken("scale-unplugged", open="SerialException", close="KeyError"),
        # A driver bug in read; its command fails with another.
        broken("scale-keyerror", read="KeyError", execute="ValueError"),
        # A library's exceptions from read (decoding bytes) and from execute.
        broken("scale-garbled", read="struct.error", execute="ModbusException"),
        # A driver that cannot even be built: Agent() used to raise it, and
        # `kmz agent` showed a traceback instead of starting the others.
        broken("scale-unbuildable", build="BadModel"),
        InstrumentConfig(
            id="germ-air",
            driver="i2c",
            poll_interval_s=0.02,
            settings={"sensor": "sht3x", "simulated": True},
        ),
    ]
    agent = Agent(
        AgentConfig(hub=hub.url, agent_id="broken-pi", instruments=instruments),
        timeouts=Timeouts(reconnect_max_s=0.5),
        drivers={"broken": BrokenDriver, "i2c": I2cDriver},
    )
    expected_reasons = {
        "scale-unplugged": "driver error: serial.SerialException: device reports readiness",
        "scale-keyerror": "driver error: KeyError: 'weight'",
        # Whose exception it is, not just "error" (struct.error's own name).
        "scale-garbled": "driver error: struct.error: unpack requires a buffer of 4 bytes",
        "scale-unbuildable": "driver error: ValueError: no such scale model 'XS-9'",
    }
    task = asyncio.create_task(agent.run())
    try:
        async with raw_client(hub.url) as client:
            await client.send({"type": "subscribe", "id": "s", "patterns": ["*"]})
            await client.receive_type("subscribed")

            # Each broken instrument turns faulted at the hub, with its own reason.
            reasons: dict[str, str] = {}
            while set(reasons) != set(expected_reasons):
                status = await client.receive_type("status", timeout=DEADLINE_S)
                if status["state"] == "faulted":
                    reasons[status["instrument"]] = status["reason"]
            for instrument, reason in expected_reasons.items():
                assert reason in reasons[instrument], (instrument, reasons[instrument])

            # The healthy sensor keeps delivering while the broken ones keep failing.
            drivers = {
                i: agent.runners[i].driver for i in expected_reasons if i != "scale-unbuildable"
            }
            before = {i: dict(d.calls) for i, d in drivers.items()}  # type: ignore[attr-defined]
            after = {i: d.calls for i, d in drivers.items()}  # type: ignore[attr-defined]
            # Until the unplugged one was reopened (after its backoff, about 0.5 s).
            while after["scale-unplugged"]["open"] < 2:
                await samples_of(client, "germ-air", 1)
            await samples_of(client, "germ-air", 10)
            assert after["scale-keyerror"]["read"] > before["scale-keyerror"]["read"] + 5
            assert after["scale-garbled"]["read"] > before["scale-garbled"]["read"] + 5
            # Every failed open was followed by a close, whose own failure changed nothing.
            assert after["scale-unplugged"]["close"] >= after["scale-unplugged"]["open"] - 1

            # A command to each broken instrument gets an error reply, not silence.
            unplugged = await command(client, "scale-unplugged", "c1")
            assert (unplugged["ok"], unplugged["error"]["code"]) == (
                False,
                "instrument_unreachable",
            )
            # Named by its id: a driver configured by settings has no `port`.
            assert unplugged["error"]["message"].startswith("scale-unplugged is not open")
            assert "SerialException" in unplugged["error"]["message"]
            for instrument, id_, raised in (
                ("scale-keyerror", "c2", "ValueError: could not convert string to float"),
                ("scale-garbled", "c3", "ModbusException"),
            ):
                reply = await command(client, instrument, id_)
                assert (reply["ok"], reply["error"]["code"]) == (False, "internal_error")
                assert raised in reply["error"]["message"]

            # The hub's list agrees, and the agent and the healthy sensor go on.
            await client.send({"type": "list_instruments", "id": "l1"})
            listed = await client.receive_type("instrument_list")
            states = {i["id"]: (i["state"], i["reason"]) for i in listed["instruments"]}
            for instrument, reason in expected_reasons.items():
                assert states[instrument][0] == "faulted"
                assert reason in states[instrument][1]
            assert states["germ-air"] == ("online", "")
            await samples_of(client, "germ-air", 5)
            assert not task.done(), "the agent stopped"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
