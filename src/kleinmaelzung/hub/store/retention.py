"""Retention: how long the traffic log keeps each kind of entry, applied in the background.

Kinds (``kmz log --stats`` shows each):

- ``samples``: the sample table (`history`, `export`, a client's ``since``).
- ``commands``: commands and their replies, who sent what.
- ``audit``: who connected (``agent_hello``, ``client_hello``), what was
  refused, each instrument's status changes and the hub's starts and stops
  (the timelines, `hub.timeline`).
- ``calibration``: the calibration steps the hub logged.
- ``wire``: every other logged message, the full wire copies (data frames,
  acks, subscriptions, ...), by far the largest part of the log.

A kind kept for 0 days is kept forever. What is due: on SQLite, every entry
older than its kind's retention (hub time: a sample's receive time, an
entry's ``ts``), removed a batch at a time; on PostgreSQL a month at a time,
once the whole month is older (a partition dropped, never rows deleted;
months holding entries of a kind kept longer keep those).

The bookkeeping the hub needs to recognise samples an agent sends again is
pruned too: each instrument keeps the seqs of its newest `KEEP_RUNS` runs
and of every run written in the last `BOOKKEEPING_GRACE_S`, and a writer's
stream position goes once it has not committed for a day (it only matters
while its hub has items in flight).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Annotated, Literal, Protocol

import msgspec

from ...protocol.log import REFUSED

_log = logging.getLogger(__name__)

Kind = Literal["samples", "wire", "commands", "audit", "calibration"]
KINDS: tuple[Kind, ...] = ("samples", "wire", "commands", "audit", "calibration")

#: The log entry types of each kind but ``samples`` and ``wire`` (every other type).
TYPES_OF_KIND: dict[Kind, tuple[str, ...]] = {
    "commands": ("command", "reply"),
    "audit": (REFUSED, "agent_hello", "client_hello", "status", "hub_start", "hub_stop"),
    "calibration": ("calibration",),
}

DAY_S = 86_400.0
#: Runs of each instrument whose seqs are kept whatever their age: an agent
#: resends only samples of runs still in its spool, its newest ones.
KEEP_RUNS = 2
#: Seqs written more recently than this are kept, whatever the run.
BOOKKEEPING_GRACE_S = 90 * DAY_S
#: A writer position not committed for this long is of a writer that is gone
#: or idle, with nothing in flight that it could write twice.
POSITION_GRACE_S = DAY_S


class RetentionPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Days each kind of log entry is kept (0: forever), and how the pruning runs."""

    samples_days: Annotated[float, msgspec.Meta(ge=0)] = 730.0
    wire_days: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    commands_days: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    audit_days: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    calibration_days: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    #: Seconds between passes; 0 turns retention off (nothing is ever removed).
    interval_s: Annotated[float, msgspec.Meta(ge=0)] = 3600.0
    #: Sample rows removed per transaction on SQLite (a tenth as many traffic
    #: rows): each holds the write lock for a few milliseconds, so the hub's
    #: writer never waits long (`sqlite_retention`).
    batch_rows: Annotated[int, msgspec.Meta(ge=1)] = 1000

    def days(self, kind: Kind) -> float:
        """The days `kind` is kept; 0 for forever."""
        days: float = getattr(self, f"{kind}_days")
        return days

    def cutoffs(self, now: float) -> dict[Kind, float | None]:
        """Per kind, the hub time before which entries are due; None if kept forever."""
        return {k: (now - self.days(k) * DAY_S if self.days(k) else None) for k in KINDS}


class KindStats(msgspec.Struct, frozen=True, kw_only=True):
    """What the log holds of one kind."""

    kind: str
    rows: int
    #: Bytes of the logged messages (values for samples), without indexes.
    bytes: int
    #: Hub time of the oldest entry; None if there is none.
    oldest: float | None
    #: Days it is kept; 0 for forever.
    retention_days: float


class LogStats(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/log/stats``: sizes and the oldest entry per kind."""

    backend: str
    #: The database's size on disk, indexes included (the SQLite file with its
    #: WAL; PostgreSQL's tables of the log).
    total_bytes: int
    kinds: list[KindStats]
    #: Bookkeeping rows: seqs per run and instrument, writer positions.
    instrument_seqs: int
    writer_positions: int


class PruneReport(msgspec.Struct, kw_only=True):
    """What one pass removed."""

    #: Rows removed per kind (PostgreSQL: counted before the drop).
    removed: dict[str, int] = {}
    #: PostgreSQL partitions dropped or rewritten, by name.
    partitions: list[str] = []
    seqs_removed: int = 0
    positions_removed: int = 0


class Pruner(Protocol):
    """One backend's side of retention."""

    async def prune(self, policy: RetentionPolicy, now: float) -> PruneReport:
        """Remove what is due at `now`; a batch at a time, never stalling the hub's writer."""

    async def stats(self, policy: RetentionPolicy) -> LogStats:
        """Sizes and oldest entry per kind."""


def kind_of(type_: str) -> Kind:
    """The retention kind of a log entry type."""
    for kind, types in TYPES_OF_KIND.items():
        if type_ in types:
            return kind
    return "wire"


def pruner_for(backend: object) -> Pruner | None:
    """The pruner of a store's backend; None for a backend without one."""
    from .sqlite import SqliteBackend

    if isinstance(backend, SqliteBackend):
        from .sqlite_retention import SqlitePruner

        return SqlitePruner(backend.path)
    try:
        from .postgres import PostgresBackend
    except ImportError:  # the postgres extra is not installed
        return None
    if isinstance(backend, PostgresBackend):
        from .postgres_retention import PostgresPruner

        return PostgresPruner(backend)
    return None


class RetentionRunner:
    """Runs a pruner every `policy.interval_s`; a failed pass is logged and retried next time."""

    def __init__(
        self,
        pruner: Pruner,
        policy: RetentionPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pruner = pruner
        self.policy = policy
        self._clock = clock
        #: The newest pass's report; None before the first.
        self.last: PruneReport | None = None

    async def run_once(self) -> PruneReport:
        """One pass now."""
        report = await self.pruner.prune(self.policy, self._clock())
        self.last = report
        if report.removed or report.partitions or report.seqs_removed:
            _log.info(
                "traffic log pruned",
                extra={
                    "removed": report.removed,
                    "partitions": report.partitions,
                    "seqs": report.seqs_removed,
                    "positions": report.positions_removed,
                },
            )
        return report

    async def run(self, first_delay_s: float = 60.0) -> None:
        """Prune after `first_delay_s` (the hub has settled), then every interval."""
        if not self.policy.interval_s:
            return
        await asyncio.sleep(first_delay_s)
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the top of a task: logged, tried again next pass
                _log.error("traffic log pruning failed", extra={"error": repr(exc)})
            await asyncio.sleep(self.policy.interval_s)


def named_types() -> tuple[str, ...]:
    """The entry types of every kind but ``wire``: a ``wire`` query excludes them."""
    return tuple(t for types in TYPES_OF_KIND.values() for t in types)
