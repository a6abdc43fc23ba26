"""The traffic log's interface: what the hub writes and reads, whatever the backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

from ...protocol import InstrumentInfo, LogEntry, Value
from ..errors import HubError

if TYPE_CHECKING:
    from .queries import ExportRow, HistoryRow, LogQuery

Direction = Literal["in", "out"]


@dataclass(frozen=True, slots=True)
class Record:
    """One logged message: `message` is its JSON exactly as it crossed the wire."""

    ts: float
    direction: Direction
    peer: str
    type: str
    message: bytes
    instrument: str | None = None
    #: For inbound data: who it was forwarded to. Data going out is recorded
    #: here, on the row of the samples, rather than as a copy per delivery.
    delivered_to: str | None = None
    #: For inbound data: the agent and the highest seq per instrument in this
    #: record, acknowledged to the agent once the record is committed.
    ack: tuple[str, Mapping[str, int]] | None = field(default=None, compare=False)
    #: For inbound data: the agent's run, so that after a restart the hub knows
    #: which seqs of that run it has already logged (`Store.last_seqs`).
    run: str | None = None
    #: Its place in the stream a writer process commits (`process`): the
    #: writer's committed position is stored with the rows, so that a writer
    #: restarted after a crash skips what its predecessor committed. None in
    #: the hub, which numbers records by where they are in the stream.
    position: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class KnownInstrument:
    """An instrument the hub has seen, remembered across restarts."""

    info: InstrumentInfo
    agent: str
    #: Hub time of its newest logged reading; None if it never sent one.
    last_seen: float | None = None

    @property
    def id(self) -> str:
        """The instrument's id."""
        return self.info.id


class LoggedSample(msgspec.Struct, frozen=True, kw_only=True):
    """One logged sample, as the sample table holds it (`Store.query_samples`)."""

    instrument: str
    #: The agent's run it came in; None for samples logged before schema version 5.
    run: str | None
    seq: int
    #: The agent's time of the reading.
    ts: float
    #: The hub's time when it received the sample: the `ts` of its message's log entry.
    received: float
    values: dict[str, Value]


@dataclass(frozen=True, slots=True)
class LogHealth:
    """Whether the traffic log keeps up; `degraded` says why in `reason`."""

    state: Literal["ok", "degraded"] = "ok"
    reason: str = ""


#: Called (on the event loop) when the log's health changes.
OnHealth = Callable[[LogHealth], None]


class StoreError(HubError):
    """The traffic log cannot do what was asked."""


class StoreUnavailable(StoreError):
    """The traffic log cannot be opened: the message names where it is and why."""


class StoreClosed(StoreError):
    """The traffic log was used after `close()`."""


class WriterFailed(StoreError):
    """The traffic log's writer stopped; nothing more will be committed."""


#: Called (on the event loop) after a commit with the highest committed seq
#: per instrument, keyed by each record's `ack` key (the hub uses agent/run).
OnCommitted = Callable[[dict[str, dict[str, int]]], None]


class Store(Protocol):
    """A durable, append-only traffic log."""

    def set_on_committed(self, on_committed: OnCommitted) -> None:
        """Call `on_committed` after each commit that held records with an `ack`."""

    async def open(self) -> None:
        """Open the backend (create or upgrade it) and start writing."""

    def append(self, record: Record) -> None:
        """Queue a record for writing; never blocks the event loop.

        Raises `StoreClosed` after `close()`, `WriterFailed` once the writer stopped.
        """

    async def query(
        self, *, instrument: str | None = None, limit: int = 100, types: Sequence[str] = ()
    ) -> list[LogEntry]:
        """Return the newest entries (of these `types`, if any are named), newest first."""

    async def query_samples(
        self, instrument: str, start: float, end: float, *, limit: int = 100_000
    ) -> list[LoggedSample]:
        """One instrument's committed samples with `start <= ts < end` (its time), oldest first."""

    async def query_log(self, query: LogQuery, *, limit: int = 100) -> list[LogEntry]:
        """Committed entries matching `query`, in its order, at most `limit`."""

    async def history(
        self,
        instrument: str,
        start: float,
        end: float,
        every: float,
        channels: Sequence[str] = (),
    ) -> list[HistoryRow]:
        """One instrument's samples downsampled by the database into buckets of `every` s."""

    async def count_samples(self, instrument: str, start: float, end: float) -> int:
        """How many committed samples of `instrument` have ``start <= ts < end``."""

    def stream_samples(
        self, instrument: str, start: float, end: float, *, chunk_rows: int = 5000
    ) -> AsyncIterator[list[ExportRow]]:
        """One instrument's committed samples, oldest first, `chunk_rows` at a time."""

    def save_instrument(
        self, info: InstrumentInfo, agent: str, last_seen: float | None = None
    ) -> None:
        """Queue remembering an instrument (committed with the next batch); never blocks."""

    def forget_instrument(self, instrument_id: str) -> None:
        """Queue forgetting a remembered instrument; its logged traffic stays."""

    async def load_instruments(self) -> list[KnownInstrument]:
        """Every remembered instrument, sorted by id, with its newest reading's time."""

    async def flush(self) -> None:
        """Wait until everything appended so far is committed (or dropped as unwritable).

        Raises `WriterFailed` promptly if the writer stopped.
        """

    async def last_seqs(self, run: str, instruments: Iterable[str]) -> dict[str, int]:
        """The highest committed seq of each instrument in this agent run."""

    async def wait_for_room(self) -> None:
        """Return at once unless the backlog is over high water; then wait for low water."""

    async def close(self) -> None:
        """Commit what is queued and release the backend; `WriterFailed` if it stopped."""

    @property
    def backlog(self) -> int:
        """Records appended but not yet committed."""

    @property
    def health(self) -> LogHealth:
        """Whether the log keeps up, and if not why."""

    def set_on_health(self, on_health: OnHealth) -> None:
        """Call `on_health` (on the loop) whenever the log turns degraded or ok again."""
