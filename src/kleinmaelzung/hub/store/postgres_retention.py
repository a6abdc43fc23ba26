"""Retention on PostgreSQL: a month's partition dropped, never rows deleted one by one.

A month of samples is dropped once the whole month is older than the
samples' retention. A month of traffic once the whole month is older than
the wire copies' retention: if it holds entries of kinds kept longer
(commands, audit, calibration), those are copied into a new table first,
which then takes the old partition's place (a swap of a few milliseconds;
the copy runs before it, without holding the log's lock).

DDL on a partition takes a lock on its table that the hub's writer also
needs: the pruner's `LOCK_TIMEOUT_MS` is short, so that the writer waits at
most that long, and a pass that cannot get the lock leaves the month to the
next pass.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import asyncpg

from . import postgres_schema as schema
from .retention import (
    BOOKKEEPING_GRACE_S,
    KEEP_RUNS,
    KINDS,
    POSITION_GRACE_S,
    TYPES_OF_KIND,
    Kind,
    KindStats,
    LogStats,
    PruneReport,
    RetentionPolicy,
    kind_of,
)

if TYPE_CHECKING:
    from .postgres import PostgresBackend

_log = logging.getLogger(__name__)

#: How long a partition's DDL waits for its lock before giving up for this pass.
LOCK_TIMEOUT_MS = 200

_PARTITION = re.compile(r"^(sample|traffic)_(\d{4})_(\d{2})$")

_LEAVES = """
SELECT c.relname FROM pg_partition_tree($1::regclass) t JOIN pg_class c ON c.oid = t.relid
WHERE t.isleaf
"""
_DELETE_SEQS = """
DELETE FROM instrument_seq s USING (
    SELECT run, instrument, row_number() OVER (
        PARTITION BY instrument ORDER BY updated DESC, run DESC) AS newest
    FROM instrument_seq) r
WHERE s.run = r.run AND s.instrument = r.instrument AND r.newest > $2
    AND s.updated < to_timestamp($1)
"""
_SIZE = """
SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree($1::regclass)
"""


class PostgresPruner:
    """Drops what is due from one PostgreSQL traffic log, a month at a time."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend

    async def prune(self, policy: RetentionPolicy, now: float) -> PruneReport:
        """Drop the months due at `now`, then the bookkeeping no one needs."""
        report = PruneReport(removed={})
        cutoffs = policy.cutoffs(now)
        connection = await self.backend.connect_aside(lock_timeout=str(LOCK_TIMEOUT_MS))
        try:
            for name, table, start, end in await _partitions(connection):
                try:
                    if table == "sample":
                        await self._prune_samples(connection, name, end, cutoffs, report)
                    else:
                        await self._prune_traffic(connection, name, start, end, cutoffs, report)
                except asyncpg.exceptions.LockNotAvailableError:
                    _log.info("partition busy; left to the next pass", extra={"partition": name})
            removed = await connection.execute(_DELETE_SEQS, now - BOOKKEEPING_GRACE_S, KEEP_RUNS)
            report.seqs_removed = _count(removed)
            removed = await connection.execute(
                "DELETE FROM writer_position WHERE committed_at < to_timestamp($1)",
                now - POSITION_GRACE_S,
            )
            report.positions_removed = _count(removed)
        finally:
            await connection.close()
        return report

    async def _prune_samples(
        self,
        connection: Any,
        name: str,
        end: float,
        cutoffs: dict[Kind, float | None],
        report: PruneReport,
    ) -> None:
        cutoff = cutoffs["samples"]
        if cutoff is None or end > cutoff:
            return
        rows = await connection.fetchval(f'SELECT count(*) FROM "{name}"')
        await connection.execute(f'DROP TABLE "{name}"')
        report.removed["samples"] = report.removed.get("samples", 0) + rows
        report.partitions.append(name)

    async def _prune_traffic(
        self,
        connection: Any,
        name: str,
        start: float,
        end: float,
        cutoffs: dict[Kind, float | None],
        report: PruneReport,
    ) -> None:
        due = [k for k in KINDS if k != "samples" and _whole_month_due(cutoffs[k], end)]
        if "wire" not in due:
            return  # wire copies are the bulk: the month stays until they go
        kept = [t for k in KINDS if k not in due and k in TYPES_OF_KIND for t in TYPES_OF_KIND[k]]
        by_type = await connection.fetch(f'SELECT type, count(*) FROM "{name}" GROUP BY type')
        removed: dict[Kind, int] = {}
        for type_, count in by_type:
            if type_ not in kept:
                kind = kind_of(type_)
                removed[kind] = removed.get(kind, 0) + count
        if not removed:
            return  # rewritten before: only kept kinds left
        if not kept or not any(t in kept for t, _ in by_type):
            await connection.execute(f'DROP TABLE "{name}"')
        else:
            await self._keep_only(connection, name, start, end, kept)
        for kind, count in removed.items():
            report.removed[kind] = report.removed.get(kind, 0) + count
        report.partitions.append(name)

    async def _keep_only(
        self, connection: Any, name: str, start: float, end: float, kept: list[str]
    ) -> None:
        """Replace partition `name` by a copy of its rows of the `kept` types."""
        copy, old = f"{name}_kept", f"{name}_old"
        await connection.execute(f'DROP TABLE IF EXISTS "{copy}"')  # a pass that stopped midway
        await connection.execute(
            f'CREATE TABLE "{copy}" (LIKE "{name}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
        )
        # The range as a check, so that attaching need not scan the table.
        await connection.execute(
            f'ALTER TABLE "{copy}" ADD CONSTRAINT "{copy}_range"'
            f" CHECK (ts >= to_timestamp({start}) AND ts < to_timestamp({end}))"
        )
        await connection.execute(
            f'INSERT INTO "{copy}" SELECT * FROM "{name}" WHERE type = ANY($1::text[])', kept
        )
        async with connection.transaction():
            # Rows written to the month since the copy (a hub whose clock is
            # that far behind): copied too, under the lock.
            await connection.execute(f'LOCK TABLE "{name}" IN EXCLUSIVE MODE')
            await connection.execute(
                f'INSERT INTO "{copy}" SELECT * FROM "{name}" WHERE type = ANY($1::text[])'
                f' AND id > (SELECT coalesce(max(id), -1) FROM "{copy}")',
                kept,
            )
            await connection.execute(f'ALTER TABLE traffic DETACH PARTITION "{name}"')
            await connection.execute(f'ALTER TABLE "{name}" RENAME TO "{old}"')
            await connection.execute(f'ALTER TABLE "{copy}" RENAME TO "{name}"')
            await connection.execute(
                f'ALTER TABLE traffic ATTACH PARTITION "{name}"'
                f" FOR VALUES FROM (to_timestamp({start})) TO (to_timestamp({end}))"
            )
        await connection.execute(f'DROP TABLE "{old}"')

    async def stats(self, policy: RetentionPolicy) -> LogStats:
        """Sizes and oldest entry per kind (reads the whole log once)."""
        rows = dict.fromkeys(KINDS, 0)
        sizes = dict.fromkeys(KINDS, 0)
        oldest: dict[str, float | None] = dict.fromkeys(KINDS)
        connection = await self.backend.connect_aside()
        try:
            by_type = await connection.fetch(
                "SELECT type, count(*), coalesce(sum(octet_length(message)), 0),"
                " date_part('epoch', min(ts)) FROM traffic GROUP BY type"
            )
            samples = await connection.fetchrow(
                "SELECT count(*), coalesce(sum(octet_length(channel_values::text)), 0),"
                " date_part('epoch', min(received)) FROM sample"
            )
            total = 0
            for table in (*schema.PARTITIONED, "instrument_seq", "known_instrument"):
                total += await connection.fetchval(_SIZE, table)
            total += await connection.fetchval(_SIZE, "writer_position")
            seqs = await connection.fetchval("SELECT count(*) FROM instrument_seq")
            positions = await connection.fetchval("SELECT count(*) FROM writer_position")
        finally:
            await connection.close()
        for type_, count, size, first in by_type:
            kind = kind_of(type_)
            rows[kind] += count
            sizes[kind] += size
            known = oldest[kind]
            oldest[kind] = first if known is None else min(known, first)
        rows["samples"], sizes["samples"], oldest["samples"] = (
            samples[0],
            samples[1],
            samples[2],
        )
        return LogStats(
            backend="postgresql",
            total_bytes=int(total),
            kinds=[
                KindStats(
                    kind=kind,
                    rows=rows[kind],
                    bytes=int(sizes[kind]),
                    oldest=oldest[kind],
                    retention_days=policy.days(kind),
                )
                for kind in KINDS
            ],
            instrument_seqs=seqs,
            writer_positions=positions,
        )


def _whole_month_due(cutoff: float | None, end: float) -> bool:
    return cutoff is not None and end <= cutoff


async def _partitions(connection: Any) -> list[tuple[str, str, float, float]]:
    """Each month's partition: (name, table, start, end), oldest first."""
    found = []
    for table in schema.PARTITIONED:
        for (name,) in await connection.fetch(_LEAVES, table):
            match = _PARTITION.match(name)
            if match is None or match[1] != table:
                continue
            start, end = schema.month_bounds((int(match[2]), int(match[3])))
            found.append((name, table, start, end))
    return sorted(found, key=lambda p: (p[2], p[1]))


def _count(status: str) -> int:
    """The row count of a command status such as ``DELETE 12``."""
    return int(status.rsplit(" ", 1)[-1])
