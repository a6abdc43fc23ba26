"""The PostgreSQL traffic log (extra ``postgres``): asyncpg, batches written with binary COPY.

The write side runs on the writer thread with an event loop of its own and
one connection, so that encoding rows never runs on the hub's loop; the read
side is a small pool on the hub's loop. ``?schema=NAME`` in the URL keeps the
log in a schema of its own (created if missing).

Errors that may heal (the server is down or restarting, a full disk, a lock
held too long) become `BackendUnavailable`, which the writer retries,
reconnecting as needed; errors about the data are left to the writer to isolate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, Unpack
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec

from ...protocol import LogEntry, Value
from . import postgres_schema as schema
from . import postgres_summaries
from .backend import BackendUnavailable, decode_info, log_entries
from .base import KnownInstrument, LoggedSample, StoreError
from .batch import Batch, SaveInstrument
from .queries import ExportRow, HistoryRow, LogQuery, order_clause, where_clause
from .urls import redact_url
from .writer import LogWriter, WriterOptions

_log = logging.getLogger(__name__)

SCHEMA_VERSION = schema.SCHEMA_VERSION
#: How long connecting may take before the server counts as unreachable.
CONNECT_TIMEOUT_S = 5.0
#: How long a write waits for a lock (someone's open transaction, a
#: migration) before it fails and is retried: a writer stuck on a lock
#: would not notice that the hub is closing.
LOCK_TIMEOUT_MS = 1000
#: Connections for queries (REST, hellos); writes have their own.
READ_POOL_SIZE = 4

_values_decoder = msgspec.json.Decoder(dict[str, Value])
_T = TypeVar("_T")

#: Errors after which the connection is not trusted again.
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
)
#: Errors that may heal by themselves: a retry may succeed.
_MAY_HEAL: tuple[type[BaseException], ...] = (
    *_CONNECTION_LOST,
    asyncpg.exceptions.InsufficientResourcesError,  # disk full, out of memory
    asyncpg.exceptions.PostgresSystemError,  # I/O error
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby, before failover completes
)


def _time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _split_schema(url: str) -> tuple[str, str | None]:
    """The URL for asyncpg without our ``schema`` parameter, and that parameter."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    rest = [(key, value) for key, value in query if key != "schema"]
    return urlunsplit(parts._replace(query=urlencode(rest))), (schemas[-1] if schemas else None)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class PostgresBackend:
    """A traffic log in a PostgreSQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._dsn, self.schema = _split_schema(url)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: Any = None  # asyncpg.Connection, on the writer's loop
        self._pool: Any = None  # asyncpg.Pool, on the hub's loop
        #: Months whose partitions (sample, traffic) are known to exist.
        self._months: set[tuple[int, int]] = set()

    @property
    def location(self) -> str:
        """The URL without its password."""
        return redact_url(self.url)

    def _settings(self, *, writer: bool) -> dict[str, str]:
        settings = {"application_name": "kmz-hub-writer" if writer else "kmz-hub"}
        if self.schema:
            settings["search_path"] = _quote(self.schema)
        if writer:
            # An Ack lets the agent forget the samples: the commit must be on
            # disk, whatever the server's default says.
            settings["synchronous_commit"] = "on"
            settings["lock_timeout"] = str(LOCK_TIMEOUT_MS)
        return settings

    async def _connect(self, *, writer: bool) -> Any:
        try:
            return await asyncpg.connect(
                self._dsn, timeout=CONNECT_TIMEOUT_S, server_settings=self._settings(writer=writer)
            )
        except _MAY_HEAL as exc:
            raise BackendUnavailable(f"cannot connect: {exc or type(exc).__name__}") from exc

    async def connect_aside(self, **settings: str) -> Any:
        """A connection of its own on the caller's loop (retention), in the log's schema."""
        try:
            return await asyncpg.connect(
                self._dsn,
                timeout=CONNECT_TIMEOUT_S,
                server_settings={**self._settings(writer=False), **settings},
            )
        except _MAY_HEAL as exc:
            raise StoreError(f"cannot connect to {self.location}: {exc}") from exc

    # --- the write side: its own event loop on the writer thread ---------------

    def open(self) -> None:
        """Connect, create or migrate the schema, make the partitions of this month and the next."""
        self._loop = asyncio.new_event_loop()
        try:
            self._run(self._open())
        except BaseException:
            self.close()
            raise

    async def _open(self) -> None:
        self._connection = connection = await self._connect(writer=True)
        # Hubs sharing one log open it at once: CREATE ... IF NOT EXISTS is
        # not safe against a concurrent creator (three backends opening a new
        # schema at once: one or two failed in 10 of 10 tries, on the schema or
        # a partition), so all of it runs under the migrations' lock.
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", schema.MIGRATION_LOCK)
            if self.schema:
                await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(self.schema)}")
            await migrate(connection)
            now = datetime.now(UTC).timestamp()
            await self._ensure_partitions(connection, now, now)

    def _run(self, coroutine: Awaitable[_T]) -> _T:
        assert self._loop is not None, "open() first"
        return self._loop.run_until_complete(coroutine)

    def write(self, batch: Batch) -> None:
        """Commit the batch in one transaction, or nothing of it."""
        try:
            self._run(self._write(batch))
        except _MAY_HEAL as exc:
            if isinstance(exc, _CONNECTION_LOST) and self._connection is not None:
                self._connection.terminate()
                self._connection = None
            raise BackendUnavailable(str(exc) or type(exc).__name__) from exc

    async def _write(self, batch: Batch) -> None:
        if self._connection is None:  # lost: reconnect
            self._connection = await self._connect(writer=True)
        connection = self._connection
        # The partitions of each month the batch's times fall in: samples by
        # their receive time, traffic by its ts (both the hub's clock).
        times = [row[4] for row in batch.samples] + [r.ts for r in batch.records]
        if times:
            await self._ensure_partitions(connection, min(times), max(times))
        # Rows converted before the transaction: a value that cannot be
        # converted fails the batch before it takes the connection.
        traffic = [
            (
                _time(r.ts),
                r.direction,
                r.peer,
                r.instrument,
                r.type,
                r.message.decode(),
                r.delivered_to,
            )
            for r in batch.records
        ]
        samples = [
            (instrument, run, seq, _time(ts), _time(received), values)
            for instrument, run, seq, ts, received, values in batch.samples
        ]
        async with connection.transaction():
            if traffic:
                await connection.copy_records_to_table(
                    "traffic", records=traffic, columns=schema.TRAFFIC_COLUMNS
                )
            if samples:
                await connection.copy_records_to_table(
                    "sample", records=samples, columns=schema.SAMPLE_COLUMNS
                )
            if batch.newest_seqs:
                newest = batch.newest_seqs
                await connection.execute(
                    schema.UPSERT_SEQS,
                    [run for run, _ in newest],
                    [instrument for _, instrument in newest],
                    list(newest.values()),
                )
            for change in batch.instrument_changes:
                if isinstance(change, SaveInstrument):
                    last_seen = None if change.last_seen is None else _time(change.last_seen)
                    await connection.execute(
                        schema.UPSERT_INSTRUMENT, change.id, change.agent, change.info, last_seen
                    )
                else:
                    await connection.execute(schema.DELETE_INSTRUMENT, change.id)
            if batch.position is not None:
                await connection.execute(schema.UPSERT_POSITION, *batch.position)

    async def _ensure_partitions(self, connection: Any, first: float, last: float) -> None:
        """Make the partitions of each partitioned table from `first`'s month to the month
        after `last`'s."""
        month = schema.month_of(first)
        until = schema.next_month(schema.month_of(last))
        while True:
            if month not in self._months:
                try:
                    # Under the migrations' lock: another hub on the same log
                    # makes the same partition at the same month's turn.
                    async with connection.transaction():
                        await connection.execute(
                            "SELECT pg_advisory_xact_lock($1)", schema.MIGRATION_LOCK
                        )
                        for table in schema.PARTITIONED:
                            await connection.execute(schema.create_partition(month, table))
                except _MAY_HEAL:
                    raise  # a lost connection is reset by `write`
                except asyncpg.PostgresError as exc:
                    # Another hub making the same partition, or no right to:
                    # either way not the batch's fault, so retried.
                    raise BackendUnavailable(f"cannot make a partition: {exc}") from exc
                self._months.add(month)
            if month == until:
                return
            month = schema.next_month(month)

    def committed_position(self, writer: str) -> int:
        """The highest stream position `writer` committed; -1 if none."""
        try:
            return self._run(self._committed_position(writer))
        except _MAY_HEAL as exc:
            raise BackendUnavailable(str(exc) or type(exc).__name__) from exc

    async def _committed_position(self, writer: str) -> int:
        if self._connection is None:
            self._connection = await self._connect(writer=True)
        position = await self._connection.fetchval(schema.SELECT_POSITION, writer)
        return -1 if position is None else int(position)

    def writer_pid(self) -> int | None:
        """The server process of the writer's connection; None while it has none."""
        return None if self._connection is None else int(self._connection.get_server_pid())

    def close(self) -> None:
        """Close the writer's connection and its loop."""
        if self._loop is None:
            return
        if self._connection is not None:
            try:
                self._run(self._connection.close(timeout=CONNECT_TIMEOUT_S))
            except Exception:
                self._connection.terminate()
            self._connection = None
        self._loop.close()
        self._loop = None

    # --- the read side: a pool on the hub's loop ------------------------------

    async def start_reading(self) -> None:
        """Open the pool of query connections."""
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=READ_POOL_SIZE,
                timeout=CONNECT_TIMEOUT_S,
                server_settings=self._settings(writer=False),
            )
        except _MAY_HEAL as exc:
            raise BackendUnavailable(f"cannot connect: {exc or type(exc).__name__}") from exc

    async def stop_reading(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _read(self, query: Callable[[Any], Awaitable[_T]]) -> _T:
        if self._pool is None:
            raise StoreError(f"traffic log {self.location} is not open for reading")
        try:
            async with self._pool.acquire() as connection:
                return await query(connection)
        except (*_MAY_HEAL, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot read the traffic log {self.location}: {exc}") from exc

    async def newest_seqs(self, run: str, instruments: Iterable[str]) -> dict[str, int]:
        """The highest committed seq of each instrument in this agent run."""
        wanted = list(instruments)
        rows = await self._read(lambda c: c.fetch(schema.SELECT_SEQS, run, wanted))
        return {row[0]: row[1] for row in rows}

    async def load_instruments(self) -> list[KnownInstrument]:
        """Every remembered instrument, sorted by id, with its newest reading's time."""
        rows = await self._read(lambda c: c.fetch(schema.SELECT_INSTRUMENTS))
        known = []
        for id_, agent, info_json, saved, newest in rows:
            info = decode_info(id_, info_json)
            if info is None:
                continue
            times = [t.timestamp() for t in (saved, newest) if t is not None]
            known.append(KnownInstrument(info, agent, max(times) if times else None))
        return known

    async def query(
        self, *, instrument: str | None, limit: int, types: Sequence[str] = ()
    ) -> list[LogEntry]:
        """The newest log entries (of these `types`, if any), newest first."""
        where: list[str] = []
        params: list[object] = []
        if instrument is not None:
            params.append(instrument)
            where.append(f"instrument = ${len(params)}")
        if types:
            params.append(list(types))
            where.append(f"type = ANY(${len(params)}::text[])")
        params.append(limit)
        sql = (
            schema.SELECT_TRAFFIC
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY id DESC LIMIT ${len(params)}"
        )
        rows = await self._read(lambda c: c.fetch(sql, *params))
        return log_entries(rows)

    async def query_log(self, query: LogQuery, limit: int) -> list[LogEntry]:
        """Entries matching `query`, in its order, at most `limit`."""
        where, params = where_clause(query, "postgresql", lambda n: f"${n}")
        params.append(limit)
        sql = schema.SELECT_TRAFFIC + where + order_clause(query) + f" LIMIT ${len(params)}"
        rows = await self._read(lambda c: c.fetch(sql, *params))
        return log_entries(rows)

    async def history(
        self, instrument: str, start: float, end: float, every: float, channels: Sequence[str]
    ) -> list[HistoryRow]:
        """Per bucket of `every` s from `start`: each numeric channel's count, min, max, mean."""
        # Buckets of a minute or more: from the per-minute summaries where exact.
        summarised = await self._read(
            lambda c: postgres_summaries.history(c, instrument, start, end, every, channels)
        )
        if summarised is not None:
            return summarised
        if len(channels) == 1:
            sql, params = schema.HISTORY_ONE_CHANNEL, [instrument, start, end, every, channels[0]]
        else:
            sql, params = schema.HISTORY_CHANNELS, [instrument, start, end, every]
            if channels:
                sql = sql.replace("/* channels */", "AND j.key = ANY($5::text[])")
                params.append(list(channels))
        rows = await self._read(lambda c: c.fetch(sql, *params))
        return [HistoryRow(*row) for row in rows]

    async def count_samples(self, instrument: str, start: float, end: float) -> int:
        """How many samples of `instrument` have ``start <= ts < end``."""
        count = await self._read(lambda c: c.fetchval(schema.COUNT_SAMPLES, instrument, start, end))
        return int(count)

    async def stream_samples(
        self, instrument: str, start: float, end: float, chunk_rows: int
    ) -> AsyncIterator[list[ExportRow]]:
        """One instrument's samples with ``start <= ts < end``, oldest first, in chunks.

        A server-side cursor in one transaction: one snapshot, read a chunk
        at a time, whatever the size of the range.
        """
        if self._pool is None:
            raise StoreError(f"traffic log {self.location} is not open for reading")
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                cursor = await connection.cursor(schema.EXPORT_SAMPLES, instrument, start, end)
                while chunk := await cursor.fetch(chunk_rows):
                    yield [ExportRow(*row) for row in chunk]
        except (*_MAY_HEAL, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot read the traffic log {self.location}: {exc}") from exc

    async def query_samples(
        self, instrument: str, start: float, end: float, limit: int
    ) -> list[LoggedSample]:
        """One instrument's samples with `start <= ts < end`, oldest first."""
        rows = await self._read(
            lambda c: c.fetch(schema.SELECT_SAMPLES, instrument, _time(start), _time(end), limit)
        )
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


async def migrate(connection: Any) -> None:
    """Create the schema, or bring one made by an older hub up to SCHEMA_VERSION."""
    async with connection.transaction():
        # Two hubs starting at once: the second waits, then finds nothing to do.
        await connection.execute("SELECT pg_advisory_xact_lock($1)", schema.MIGRATION_LOCK)
        await connection.execute(schema.VERSION_TABLE)
        version = await connection.fetchval(schema.SELECT_VERSION)
        if version > schema.SCHEMA_VERSION:
            raise StoreError(
                f"the traffic log has schema version {version}, newer than this hub's"
                f" {schema.SCHEMA_VERSION}: run a newer kleinmaelzung"
            )
        for number in range(version + 1, schema.SCHEMA_VERSION + 1):
            await connection.execute(schema.MIGRATIONS[number - 1])
            await connection.execute(schema.RECORD_VERSION, number)
            _log.info("traffic log schema migrated", extra={"version": number})


class PostgresStore(LogWriter):
    """The traffic log in PostgreSQL: a `LogWriter` over a `PostgresBackend`."""

    def __init__(self, url: str, **options: Unpack[WriterOptions]) -> None:
        super().__init__(PostgresBackend(url), **options)
