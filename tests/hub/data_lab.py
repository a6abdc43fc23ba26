"""A hub with two kilns' samples in its log, for the tests of getting data out."""

from __future__ import annotations

from typing import Any

import msgspec

from kleinmaelzung.hub import RunningHub
from kleinmaelzung.hub.store import LogBackend, Record
from kleinmaelzung.hub.store.batch import Batch, Item, SaveInstrument

from .peers import raw_agent

#: 2026-11-01 00:00 UTC.
NOVEMBER = 1_793_491_200.0


def kiln(id_: str) -> dict[str, Any]:
    """A kiln controller announcement: temperature in °C, humidity in %, a flag."""
    return {
        "id": id_,
        "kind": "kiln",
        "channels": [
            {"name": "temperature", "unit": "°C"},
            {"name": "humidity", "unit": "%"},
            {"name": "heating"},
        ],
    }


def kiln_values(second: int) -> dict[str, object]:
    return {
        "temperature": 20.0 + second / 4,
        "humidity": float(second % 7),
        "heating": second % 2 == 0,
    }


class Clock:
    """The hub's clock, set by the test: the hub logs each frame at the time set."""

    def __init__(self) -> None:
        self.now = NOVEMBER

    def __call__(self) -> float:
        return self.now


async def fill(
    running: RunningHub,
    seconds: int = 120,
    token: str | None = None,
    clock: Clock | None = None,
    instruments: tuple[str, ...] = ("kiln-air", "kiln-water"),
) -> None:
    """Two kilns, one sample a second each from NOVEMBER, all committed to the log.

    Frames of 20 s; with a `clock`, each arrives half a second after its newest sample.
    """
    async with raw_agent(
        running.url, "pi-1", [kiln(i) for i in instruments], token_=token
    ) as agent:
        for first in range(0, seconds, 20):
            samples = [
                {
                    "instrument": instrument,
                    "seq": s,
                    "ts": NOVEMBER + s,
                    "values": kiln_values(s),
                }
                for s in range(first, first + 20)
                for instrument in instruments
            ]
            if clock is not None:
                clock.now = NOVEMBER + first + 19.5
            await agent.send({"type": "data", "samples": samples})
            await agent.receive_type("ack")
    await running.hub.store.flush()


def write_kiln_samples(backend: LogBackend, instrument: str, rows: int, start: float) -> None:
    """`rows` samples of a kiln, one a second from `start`, written as the hub logs them.

    Straight through the backend's write side, in frames of 100 samples and
    batches of 100 frames: a million rows take seconds, not a hub's minutes.
    """
    info = {"id": instrument, "kind": "kiln", "channels": kiln(instrument)["channels"]}
    backend.open()
    try:
        items: list[Item] = [
            SaveInstrument(instrument, "pi-1", msgspec.json.encode(info).decode(), None)
        ]
        encoder = msgspec.json.Encoder()
        for first in range(0, rows, 100):
            seqs = range(first, min(first + 100, rows))
            frame = encoder.encode(
                {
                    "type": "data",
                    "samples": [
                        {
                            "instrument": instrument,
                            "seq": s,
                            "ts": start + s,
                            "values": kiln_values(s),
                        }
                        for s in seqs
                    ],
                }
            )
            received = start + seqs[-1] + 0.5
            items.append(
                Record(received, "in", "pi-1", "data", frame, instrument, None, None, "r1")
            )
            if len(items) >= 100:
                backend.write(Batch.of(items))
                items = []
        if items:
            backend.write(Batch.of(items))
    finally:
        backend.close()
