"""What a traffic-log backend does: the seam between `LogWriter` and a database.

A backend has two sides. The write side runs on the writer's own thread and
blocks: it opens the database (creating or upgrading its schema), writes one
`Batch` per transaction and closes. The read side runs on the hub's event
loop. Everything else (queueing, batching, backpressure, retries, acks) is
the writer's, once for every backend.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Protocol

import msgspec

from ...protocol import InstrumentInfo, LogEntry
from .base import KnownInstrument, LoggedSample, StoreError
from .batch import Batch
from .queries import ExportRow, HistoryRow, LogQuery

_log = logging.getLogger(__name__)
_info_decoder = msgspec.json.Decoder(InstrumentInfo)


class BackendUnavailable(StoreError):
    """A write or an open failed in a way that may heal: retry it later.

    A full disk, a locked file, a database that is down or restarting. Any
    other exception from `LogBackend.write` means the batch's content, which
    the writer then isolates by halving the batch.
    """


class LogBackend(Protocol):
    """A database that keeps the traffic log."""

    @property
    def location(self) -> str:
        """Where the log is, for messages: a path, or a URL without its password."""

    # --- the write side: on the writer thread, blocking ----------------------

    def open(self) -> None:
        """Connect, and create the schema or bring an older one up to date.

        Raises `BackendUnavailable` if the database cannot be reached.
        """

    def write(self, batch: Batch) -> None:
        """Commit the batch in one transaction, or nothing of it.

        Raises `BackendUnavailable` for what may heal; anything else names
        something in the batch the database will never take.
        """

    def committed_position(self, writer: str) -> int:
        """The highest stream position `writer` committed (`Batch.position`); -1 if none."""

    def close(self) -> None:
        """Release the write side."""

    # --- the read side: on the hub's event loop --------------------------------

    async def start_reading(self) -> None:
        """Get ready to answer queries (after `open` succeeded)."""

    async def stop_reading(self) -> None:
        """Release what `start_reading` took."""

    async def newest_seqs(self, run: str, instruments: Iterable[str]) -> dict[str, int]:
        """The highest committed seq of each instrument in this agent run."""

    async def query(
        self, *, instrument: str | None, limit: int, types: Sequence[str] = ()
    ) -> list[LogEntry]:
        """The newest log entries (of these `types`, if any), newest first."""

    async def query_samples(
        self, instrument: str, start: float, end: float, limit: int
    ) -> list[LoggedSample]:
        """One instrument's samples with `start <= ts < end`, oldest first."""

    async def load_instruments(self) -> list[KnownInstrument]:
        """Every remembered instrument, sorted by id, with its newest reading's time."""

    async def query_log(self, query: LogQuery, limit: int) -> list[LogEntry]:
        """Entries matching `query`, in its order, at most `limit`."""

    async def history(
        self, instrument: str, start: float, end: float, every: float, channels: Sequence[str]
    ) -> list[HistoryRow]:
        """Per bucket of `every` seconds from `start`, each numeric channel's count, min, max, mean.

        Only channels named in `channels`, if any are; in no particular order.
        """

    async def count_samples(self, instrument: str, start: float, end: float) -> int:
        """How many samples of `instrument` have ``start <= ts < end``."""

    def stream_samples(
        self, instrument: str, start: float, end: float, chunk_rows: int
    ) -> AsyncIterator[list[ExportRow]]:
        """One instrument's samples with ``start <= ts < end``, oldest first, in chunks."""


def decode_info(instrument_id: str, info_json: str | bytes) -> InstrumentInfo | None:
    """A remembered instrument's info; None (and a warning) if this hub cannot read it."""
    try:
        return _info_decoder.decode(info_json)
    except msgspec.DecodeError as exc:
        # Announced under another protocol version: the agent announces it
        # again when it connects.
        _log.warning(
            "remembered instrument unreadable",
            extra={"instrument": instrument_id, "error": str(exc)},
        )
        return None


class BackendReads:
    """A store's read side: straight to its backend, on the hub's loop.

    Shared by the thread writer (`LogWriter`) and the process writer
    (`ProcessWriter`): however the log is written, it is read the same way.
    """

    backend: LogBackend

    async def last_seqs(self, run: str, instruments: Iterable[str]) -> dict[str, int]:
        """The highest committed seq of each instrument in this agent run."""
        return await self.backend.newest_seqs(run, instruments)

    async def load_instruments(self) -> list[KnownInstrument]:
        """Every remembered instrument, sorted by id, with its newest reading's time."""
        return await self.backend.load_instruments()

    async def query(
        self, *, instrument: str | None = None, limit: int = 100, types: Sequence[str] = ()
    ) -> list[LogEntry]:
        """Return the newest entries (of these `types`, if any are named), newest first."""
        return await self.backend.query(instrument=instrument, limit=limit, types=types)

    async def query_samples(
        self, instrument: str, start: float, end: float, *, limit: int = 100_000
    ) -> list[LoggedSample]:
        """One instrument's committed samples with `start <= ts < end` (its time), oldest first."""
        return await self.backend.query_samples(instrument, start, end, limit)

    async def query_log(self, query: LogQuery, *, limit: int = 100) -> list[LogEntry]:
        """Committed entries matching `query`, in its order, at most `limit`."""
        return await self.backend.query_log(query, limit)

    async def history(
        self,
        instrument: str,
        start: float,
        end: float,
        every: float,
        channels: Sequence[str] = (),
    ) -> list[HistoryRow]:
        """One instrument's samples downsampled by the database into buckets of `every` s."""
        return await self.backend.history(instrument, start, end, every, channels)

    async def count_samples(self, instrument: str, start: float, end: float) -> int:
        """How many committed samples of `instrument` have ``start <= ts < end``."""
        return await self.backend.count_samples(instrument, start, end)

    def stream_samples(
        self, instrument: str, start: float, end: float, *, chunk_rows: int = 5000
    ) -> AsyncIterator[list[ExportRow]]:
        """One instrument's committed samples, oldest first, `chunk_rows` at a time."""
        return self.backend.stream_samples(instrument, start, end, chunk_rows)


def log_entries(rows: Iterable[Sequence[Any]]) -> list[LogEntry]:
    """Traffic-log rows (id, ts, direction, peer, instrument, type, message, delivered_to)
    as entries, the message as the JSON it was logged as: both backends read them so."""
    return [
        LogEntry(
            id=row[0],
            ts=row[1],
            direction=row[2],
            peer=row[3],
            instrument=row[4],
            type=row[5],
            message=msgspec.Raw(row[6].encode()),
            delivered_to=row[7],
        )
        for row in rows
    ]
