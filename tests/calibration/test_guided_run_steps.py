"""`guided_run` with a scripted operator against a hub on 127.0.0.1 and a streaming balance peer:
as found, the adjustment, as left, a condition entered by hand, the performer's signature."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from kleinmaelzung.client import Client
from kleinmaelzung.client.calibration_run import RunAborted, guided_run

from ..hub.auth_setup import Lab
from .test_hub_api import Balance, api, register
from .test_hub_api import lab as lab  # the fixture, used by name

SETTLE_S = 0.2


class Bench:
    """A balance streaming every 20 ms: settling for a moment after each load change."""

    def __init__(self, balance: Balance) -> None:
        self.balance = balance
        self.load = 0.0
        self.span = 0.00005  # +5 mg per 100 g as found
        self.changed = time.monotonic()

    def place(self, grams: float) -> None:
        self.load, self.changed = grams, time.monotonic()

    async def stream(self) -> None:
        while True:
            settled = time.monotonic() - self.changed >= SETTLE_S
            shown = round(self.load * (1 + self.span), 3) + (0 if settled else 0.37)
            await self.balance.send(shown, stable=settled)
            await asyncio.sleep(0.02)  # the balance's own rate


class ScriptedOperator:
    """Answers the run's questions as a person at this bench would."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.questions: list[str] = []
        self.said: list[str] = []
        self.live_states: set[bool] = set()

    async def ask(self, question: str) -> str:
        self.questions.append(question)
        if "Adjust" in question:
            self.bench.span = 0.0
            return "span adjusted with the internal weight"
        if "point" in question:
            nominal = float(question.split(": ", 1)[1].split(" g", 1)[0])
            self.bench.place(nominal)
            return ""
        if "air temperature" in question:
            return "21.5 22.0"
        raise RunAborted(f"unexpected question {question!r}")

    def live(self, value: float, unit: str, stable: bool, detail: str) -> None:
        self.live_states.add(stable)

    def say(self, text: str) -> None:
        self.said.append(text)


@pytest.fixture
async def bench(lab: tuple[Lab, Balance]) -> AsyncIterator[tuple[Lab, Bench]]:
    hub, balance = lab
    await register(hub)
    bench = Bench(balance)
    task = asyncio.create_task(bench.stream())
    try:
        yield hub, bench
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.slow
async def test_as_found_adjusted_as_left_entered_and_signed(bench: tuple[Lab, Bench]) -> None:
    hub, balance = bench
    operator = ScriptedOperator(balance)
    async with Client(hub.url, token=hub.tokens["oscar"]) as client:
        view = await guided_run(
            client,
            api(hub, "oscar"),
            operator,
            instrument="balance",
            procedure="balance-quick",
            standards=("W-SET-1",),
            phases=("as_found", "as_left"),
            sign_as="Oscar Operator",
            settle_timeout_s=10,
        )
    record = view.record
    assert [s.meaning for s in record.signatures] == ["performed"]
    assert record.adjustment == "span adjusted with the internal weight"
    assert len(record.as_found) == len(record.as_left) == 3
    # As found: +5 mg per 100 g; as left: none. Each reading from a stable sample.
    assert [p.readings[0].value for p in record.as_found] == [0.0, 100.005, 200.01]
    assert [p.readings[0].value for p in record.as_left] == [0.0, 100.0, 200.0]
    for point in (*record.as_found, *record.as_left):
        assert all(r.raw[-1].stable and not r.manual for r in point.readings)
        assert len({r.ts for r in point.readings}) == 2  # two distinct samples
    (condition,) = record.environment
    assert (condition.minimum, condition.maximum, condition.manual) == (21.5, 22.0, True)
    assert operator.live_states == {False, True}  # the indicator showed both
    assert view.verdict == "pass"
    assert [p.verdict for p in view.points if p.phase == "as_found"] == ["pass", "pass", "fail"]


async def test_a_balance_that_never_settles_stops_the_run_with_a_reason(
    bench: tuple[Lab, Bench],
) -> None:
    hub, balance = bench
    operator = ScriptedOperator(balance)

    async def unsettled() -> None:
        while True:
            balance.changed = time.monotonic()  # someone leaning on the bench
            await asyncio.sleep(0.01)

    shaker = asyncio.create_task(unsettled())
    try:
        async with Client(hub.url, token=hub.tokens["oscar"]) as client:
            with pytest.raises(RunAborted, match=r"did not become stable within 0\.5 s"):
                await guided_run(
                    client,
                    api(hub, "oscar"),
                    operator,
                    instrument="balance",
                    procedure="balance-quick",
                    standards=("W-SET-1",),
                    settle_timeout_s=0.5,
                )
    finally:
        shaker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await shaker
