"""What one transaction of the traffic log writes, prepared once for every backend.

The writer gathers queued items (log records and changes to the known
instruments) into a `Batch`: the rows, the sample rows taken out of each
inbound data frame, the newest seq per instrument run to commit with them,
and what to acknowledge once they are committed. Backends only write it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec

from .base import Record

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SaveInstrument:
    """Remember an instrument (`info` is its InstrumentInfo as JSON)."""

    id: str
    agent: str
    info: str
    last_seen: float | None
    #: Its place in a writer process's stream (see `Record.position`).
    position: int | None = None

    def describe(self) -> str:
        """What this change is, for a log line."""
        return f"remembering instrument {self.id!r} of agent {self.agent!r}"


@dataclass(frozen=True, slots=True)
class ForgetInstrument:
    """Forget a remembered instrument."""

    id: str
    position: int | None = None

    def describe(self) -> str:
        """What this change is, for a log line."""
        return f"forgetting instrument {self.id!r}"


InstrumentChange = SaveInstrument | ForgetInstrument
#: What the writer queue holds: log rows and changes to the known instruments.
Item = Record | InstrumentChange

#: One row of the sample table: (instrument, run, seq, ts, received, channel
#: values as a JSON object). A tuple: the writer makes one per sample.
#:
#: One row per sample, not per data frame: it costs the writer about 2.7 us
#: per 1-sample frame (log_rate.py: 19.9 -> 33.5 ms per 5,000), which in
#: S2x (benchmarks/run.py, 5 deliveries per frame) is about 0.5 us of the
#: hub's 13-15 us of CPU per delivery. What keeps the hub over 2x
#: Mosquitto's CPU is forwarding: the hub's own process, with no log work
#: in it, takes 25-29 % of a core in S2 against Mosquitto's 11 %, and 10-11 us
#: per delivery in S2x against 6-7. A row per frame would save nothing for
#: 1-sample frames (the common case) and cost indexed time-range queries
#: for the others.
SampleRow = tuple[str, str | None, int, float, float, str]


class _Sample(msgspec.Struct):
    """The part of a sample the sample table keeps; `values` stays raw JSON."""

    instrument: str
    seq: int
    ts: float
    values: msgspec.Raw


class _Data(msgspec.Struct):
    samples: list[_Sample] = []


_data_decoder = msgspec.json.Decoder(_Data)


def sample_rows(message: bytes | str, received: float, run: str | None) -> list[SampleRow]:
    """The sample rows of one logged data frame; raises `msgspec.DecodeError` if it is not one.

    The channel values are copied as the JSON the agent sent, not re-encoded.
    """
    data = _data_decoder.decode(message)
    return [
        (s.instrument, run, s.seq, s.ts, received, bytes(s.values).decode()) for s in data.samples
    ]


@dataclass(slots=True)
class Batch:
    """Everything one transaction writes, and what its commit acknowledges."""

    records: list[Record]
    samples: list[SampleRow]
    #: The newest seq per (agent run, instrument), committed with the rows, so
    #: that samples an agent sends again after a hub restart are recognised,
    #: whichever of its runs they belong to.
    newest_seqs: dict[tuple[str, str], int]
    #: In the order they were asked for: a save then a forget forgets.
    instrument_changes: list[InstrumentChange]
    #: The highest seq per ack key and instrument among the records.
    acks: dict[str, dict[str, int]]
    #: (writer, the highest position among the items) for a writer process's
    #: batch, committed with it (`Record.position`); None otherwise.
    position: tuple[str, int] | None = None

    @classmethod
    def of(cls, items: list[Item], writer: str | None = None) -> Batch:
        """Prepare `items` for writing, in one pass (the writer competes for the GIL).

        `writer` names the writer process whose stream positions the items carry.
        """
        records: list[Record] = []
        samples: list[SampleRow] = []
        changes: list[InstrumentChange] = []
        acks: dict[str, dict[str, int]] = {}
        newest: dict[tuple[str, str], int] = {}
        position = -1
        for r in items:
            if writer is not None and r.position is not None and r.position > position:
                position = r.position
            if not isinstance(r, Record):
                changes.append(r)
                continue
            records.append(r)
            if r.type == "data" and r.direction == "in":
                try:
                    samples += sample_rows(r.message, r.ts, r.run)
                except msgspec.DecodeError as exc:
                    # The hub decoded it before logging it: a bug upstream.
                    # The message row keeps it; only the sample table misses it.
                    _log.error(
                        "data frame without samples the log can read",
                        extra={"record": describe(r), "error": str(exc)},
                    )
            if r.ack is None:
                continue
            key, seqs = r.ack
            key_acks = acks.setdefault(key, {})
            for instrument, seq in seqs.items():
                if seq > key_acks.get(instrument, -1):
                    key_acks[instrument] = seq
                if r.run and seq > newest.get((r.run, instrument), -1):
                    newest[r.run, instrument] = seq
        stream = (writer, position) if writer is not None and position >= 0 else None
        return cls(records, samples, newest, changes, acks, stream)


def merge_acks(into: dict[str, dict[str, int]], acks: dict[str, dict[str, int]]) -> None:
    """Keep the highest seq per key and instrument of both."""
    for key, seqs in acks.items():
        key_acks = into.setdefault(key, {})
        for instrument, seq in seqs.items():
            if seq > key_acks.get(instrument, -1):
                key_acks[instrument] = seq


def describe(item: Item) -> str:
    """An item for a log line: enough to find the bug that produced it."""
    if isinstance(item, Record):
        return (
            f"{item.direction} {item.type} of {item.peer!r}"
            f" (instrument {item.instrument!r}, ts {item.ts!r}): {repr(item.message)[:120]}"
        )
    return item.describe()
