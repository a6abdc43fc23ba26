"""The SQLite traffic log: one file (WAL), written by the writer thread, read by worker threads.

Writes that fail with `sqlite3.OperationalError` (a full disk, a locked or
read-only file) may heal: they become `BackendUnavailable`, which the writer
retries. Anything else SQLite raises is about a row, which the writer isolates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Unpack

import msgspec

from ...protocol import LogEntry, Value
from . import schema, sqlite_summaries
from .backend import BackendUnavailable, decode_info, log_entries
from .base import KnownInstrument, LoggedSample
from .batch import Batch, ForgetInstrument, SaveInstrument
from .queries import ExportRow, HistoryRow, LogQuery, order_clause, where_clause
from .writer import LogWriter, WriterOptions

_log = logging.getLogger(__name__)

#: Re-exported: the version this hub writes (see `schema` for the history).
SCHEMA_VERSION = schema.SCHEMA_VERSION

_values_decoder = msgspec.json.Decoder(dict[str, Value])


class SqliteBackend:
    """A traffic log in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None

    @property
    def location(self) -> str:
        """The file's path."""
        return str(self.path)

    # --- the write side --------------------------------------------------------

    def open(self) -> None:
        """Create the file and schema, or migrate one written by an older hub."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(f"cannot make its folder: {exc.strerror or exc}") from exc
        # timeout: how long SQLite itself waits for a lock held by another
        # process; beyond that the writer retries, and stops when closing.
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=1.0)
        try:
            # Before the first table: a new file hands the pages retention
            # frees back a few at a time (`sqlite_retention`); an older file
            # reuses them instead.
            connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed batch survives power loss, so an Ack to the
            # agent (which then forgets the samples) is a promise we keep.
            connection.execute("PRAGMA synchronous=FULL")
            schema.create(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def write(self, batch: Batch) -> None:
        """Commit the batch in one transaction, or nothing of it."""
        connection = self._connection
        assert connection is not None, "open() first"
        rows = [
            (r.ts, r.direction, r.peer, r.instrument, r.type, r.message.decode(), r.delivered_to)
            for r in batch.records
        ]
        try:
            connection.execute("BEGIN")
            connection.executemany(schema.INSERT_TRAFFIC, rows)
            connection.executemany(schema.INSERT_SAMPLE, batch.samples)
            connection.executemany(
                schema.UPSERT_SEQ,
                [(run, i, seq) for (run, i), seq in batch.newest_seqs.items()],
            )
            for change in batch.instrument_changes:
                if isinstance(change, SaveInstrument):
                    connection.execute(
                        schema.UPSERT_INSTRUMENT,
                        (change.id, change.agent, change.info, change.last_seen),
                    )
                elif isinstance(change, ForgetInstrument):
                    connection.execute(schema.DELETE_INSTRUMENT, (change.id,))
            if batch.position is not None:
                connection.execute(schema.UPSERT_POSITION, batch.position)
            connection.execute("COMMIT")
        except BaseException as exc:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # keep the first error, not this one
                    connection.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise BackendUnavailable(str(exc)) from exc
            raise

    def committed_position(self, writer: str) -> int:
        """The highest stream position `writer` committed; -1 if none."""
        connection = self._connection
        assert connection is not None, "open() first"
        row = connection.execute(schema.SELECT_POSITION, (writer,)).fetchone()
        return -1 if row is None else int(row[0])

    def close(self) -> None:
        """Close the writer's connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # --- the read side: a connection per query, in a worker thread --------------

    async def start_reading(self) -> None:
        """Nothing to do: each query opens the file."""

    async def stop_reading(self) -> None:
        """Nothing to do: each query closed the file."""

    async def newest_seqs(self, run: str, instruments: Iterable[str]) -> dict[str, int]:
        """The highest committed seq of each instrument in this agent run."""
        return await asyncio.to_thread(self._newest_seqs, run, set(instruments))

    def _newest_seqs(self, run: str, wanted: set[str]) -> dict[str, int]:
        with contextlib.closing(sqlite3.connect(self.path)) as connection:
            rows = connection.execute(
                "SELECT instrument, seq FROM instrument_seq WHERE run = ?", (run,)
            ).fetchall()
        return {instrument: seq for instrument, seq in rows if instrument in wanted}

    async def load_instruments(self) -> list[KnownInstrument]:
        """Every remembered instrument, sorted by id, with its newest reading's time."""
        return await asyncio.to_thread(self._load_instruments)

    def _load_instruments(self) -> list[KnownInstrument]:
        known = []
        with contextlib.closing(sqlite3.connect(self.path)) as connection:
            for id_, agent, info_json, saved in connection.execute(schema.SELECT_INSTRUMENTS):
                info = decode_info(id_, info_json)
                if info is None:
                    continue
                newest = connection.execute(schema.NEWEST_READING, (id_,)).fetchone()
                times = [t for t in (saved, newest[0] if newest else None) if t is not None]
                known.append(KnownInstrument(info, agent, max(times) if times else None))
        return known

    async def query(
        self, *, instrument: str | None, limit: int, types: Sequence[str] = ()
    ) -> list[LogEntry]:
        """The newest log entries (of these `types`, if any), newest first."""
        return await asyncio.to_thread(self._query, instrument, limit, tuple(types))

    def _query(self, instrument: str | None, limit: int, types: tuple[str, ...]) -> list[LogEntry]:
        sql = "SELECT id, ts, direction, peer, instrument, type, message, delivered_to FROM traffic"
        where: list[str] = []
        params: tuple[object, ...] = ()
        if instrument is not None:
            where.append("instrument = ?")
            params = (instrument,)
        if types:
            where.append(f"type IN ({', '.join('?' * len(types))})")
            params = (*params, *types)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        with contextlib.closing(sqlite3.connect(self.path)) as connection:
            rows = connection.execute(sql, (*params, limit)).fetchall()
        return log_entries(rows)

    async def query_log(self, query: LogQuery, limit: int) -> list[LogEntry]:
        """Entries matching `query`, in its order, at most `limit`."""
        return await asyncio.to_thread(self._query_log, query, limit)

    def _query_log(self, query: LogQuery, limit: int) -> list[LogEntry]:
        where, params = where_clause(query, "sqlite", lambda _: "?")
        sql = (
            "SELECT id, ts, direction, peer, instrument, type, message, delivered_to FROM traffic"
            + where
            + order_clause(query)
            + " LIMIT ?"
        )
        with contextlib.closing(sqlite3.connect(self.path)) as connection:
            rows = connection.execute(sql, (*params, limit)).fetchall()
        return log_entries(rows)

    async def history(
        self, instrument: str, start: float, end: float, every: float, channels: Sequence[str]
    ) -> list[HistoryRow]:
        """Per bucket of `every` s from `start`: each numeric channel's count, min, max, mean."""
        return await asyncio.to_thread(
            self._history, instrument, start, end, every, tuple(channels)
        )

    def _history(
        self, instrument: str, start: float, end: float, every: float, channels: tuple[str, ...]
    ) -> list[HistoryRow]:
        # Buckets of a minute or more: from the per-minute summaries where exact.
        summarised = sqlite_summaries.history(self.path, instrument, start, end, every, channels)
        if summarised is not None:
            return summarised
        with contextlib.closing(sqlite3.connect(self.path)) as connection:
            if len(channels) == 1:
                rows = connection.execute(
                    schema.HISTORY_ONE_CHANNEL,
                    {
                        "instrument": instrument,
                        "start": start,
                        "end": end,
                        "every": every,
                        "path": f"$.{channels[0]}",
                        "channel": channels[0],
                    },
                ).fetchall()
            else:
                sql = schema.HISTORY_CHANNELS
                params: dict[str, object] = {
                    "instrument": instrument,
                    "start": start,
                    "end": end,
                    "every": every,
                }
                if channels:
                    names = {f"c{i}": name for i, name in enumerate(channels)}
                    sql = sql.replace(
                        "/* channels */", f"AND j.key IN ({', '.join(':' + k for k in names)})"
                    )
                    params |= names
                rows = connection.execute(sql, params).fetchall()
        return [HistoryRow(*row) for row in rows]

    async def count_samples(self, instrument: str, start: float, end: float) -> int:
        """How many samples of `instrument` have ``start <= ts < end``."""
        return await asyncio.to_thread(self._count_samples, instrument, start, end)

    def _count_samples(self, instrument: str, start: float, end: float) -> int:
        with contextlib.closing(sqlite3.connect(self.path)) as connection:
            (count,) = connection.execute(schema.COUNT_SAMPLES, (instrument, start, end)).fetchone()
        return int(count)

    async def stream_samples(
        self, instrument: str, start: float, end: float, chunk_rows: int
    ) -> AsyncIterator[list[ExportRow]]:
        """One instrument's samples with ``start <= ts < end``, oldest first, in chunks.

        One read transaction from first chunk to last: the export is one
        snapshot of the log, however long the reader takes.
        """
        # Used from worker threads one call at a time (each awaited).
        connection = sqlite3.connect(self.path, check_same_thread=False)
        try:
            cursor = await asyncio.to_thread(
                connection.execute, schema.EXPORT_SAMPLES, (instrument, start, end)
            )
            while chunk := await asyncio.to_thread(cursor.fetchmany, chunk_rows):
                yield [ExportRow(*row) for row in chunk]
        finally:
            connection.close()

    async def query_samples(
        self, instrument: str, start: float, end: float, limit: int
    ) -> list[LoggedSample]:
        """One instrument's samples with `start <= ts < end`, oldest first."""
        return await asyncio.to_thread(self._query_samples, instrument, start, end, limit)

    def _query_samples(
        self, instrument: str, start: float, end: float, limit: int
    ) -> list[LoggedSample]:
        with contextlib.closing(sqlite3.connect(self.path)) as connection:
            rows = connection.execute(
                schema.SELECT_SAMPLES, (instrument, start, end, limit)
            ).fetchall()
        return [
            LoggedSample(
                instrument=row[0],
                run=row[1],
                seq=row[2],
                ts=row[3],
                received=row[4],
                values=_values_decoder.decode(row[5]),
            )
            for row in rows
        ]


class SqliteStore(LogWriter):
    """The traffic log in one SQLite file: a `LogWriter` over a `SqliteBackend`."""

    def __init__(self, path: Path, **options: Unpack[WriterOptions]) -> None:
        super().__init__(SqliteBackend(path), **options)
        self.path = path
