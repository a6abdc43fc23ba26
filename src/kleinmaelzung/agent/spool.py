"""The agent's spool: every sample on disk until the hub says it is durably logged.

One SQLite file in WAL mode (`synchronous=FULL`: a commit survives a power
cut, which a Pi will see). Samples are written in batches, every
`commit_interval_s`, never one write per sample: an SD card wears by the
page written, and a commit writes a few pages whatever it holds. A sample the
hub acknowledges before its batch is committed is never written at all, so a
connected agent writes almost nothing; a disconnected one writes every sample
once, and deletes it once acknowledged.

What a kill -9 can lose is what was taken after the last commit and not yet
acknowledged: at most `commit_interval_s` of samples, and only while the hub
is away. Everything committed is sent after the next start.

Runs. A run names one stretch of samples in which seqs only grow per
instrument: the hub recognises a resent sample by (run, seq). The link starts
a new run at every welcome (`start_session`), so the backlog of earlier runs
and the live samples of the new one are two orders that never mix, and live
samples need not wait behind a backlog. Samples taken while no hub is
connected belong to the last run, and so to the backlog of the next.

Limits. When the spool holds more than `max_samples`, or samples older than
`max_age_s`, the oldest are dropped, counted per run and instrument, and
kept as a `Gap` that the hub is told about (and acknowledges) so that the
log and every subscriber see exactly which seqs are gone.

State has one writer: the event loop. The database is touched only by the
spool's own thread, one operation at a time, in the order submitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgspec

from ..protocol import Gap, Sample
from .errors import AgentError

_log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    instrument TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    sample BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_by_run ON samples (run, instrument, seq);
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    instrument TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""

#: How often an idle spool looks for samples past `max_age_s`.
_AGE_CHECK_S = 60.0

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode
_decode_sample = msgspec.json.Decoder(Sample).decode


class SpoolError(AgentError):
    """The spool cannot be opened or used (bad path, locked by another agent, corrupt)."""


@dataclass(frozen=True, slots=True)
class SpoolLimits:
    """How much the spool keeps while the hub is away, and how often it commits."""

    max_samples: int = 5_000_000
    max_age_s: float = 7 * 24 * 3600.0
    commit_interval_s: float = 0.5
    #: While connected, how long a sample may wait for its ack before it is
    #: written anyway (a hub whose log is slow).
    hold_s: float = 1.0


@dataclass(slots=True)
class _Commit:
    """What the loop hands the spool's thread for one transaction."""

    rows: list[tuple[str, str, int, float, bytes]]
    acks: dict[tuple[str, str], int]
    gap_acks: list[int]
    now: float
    rows_before: int
    #: Gaps not yet sent to a hub, by (run, instrument): a new drop that
    #: follows one of them extends it (an outage makes one gap, not one per
    #: commit).
    mergeable: dict[tuple[str, str], Gap] = field(default_factory=dict)


@dataclass(slots=True)
class _Committed:
    """What one transaction did."""

    rows: int
    last_id: int
    oldest_ts: float | None = None
    gaps: list[Gap] = field(default_factory=list)
    runs: dict[str, int] = field(default_factory=dict)


class Spool:
    """A durable, ordered queue of samples per run, drained by the hub's acknowledgements."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        run: str,
        limits: SpoolLimits | None = None,
    ) -> None:
        """`path` None keeps the spool in memory (for tests and embedding: nothing survives).

        `run` is the run of samples taken before the first connection.
        """
        self.path = Path(path) if path is not None else None
        self.limits = limits or SpoolLimits()
        #: The run new samples belong to (`start_session` moves it on).
        self.run = run
        #: Samples dropped by the limits since this spool was opened.
        self.dropped = 0
        self._db: sqlite3.Connection | None = None
        self._lock_file: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        # Taken, not yet committed: (run, sample).
        # With the monotonic time each was taken, oldest first.
        self._unwritten: list[tuple[str, Sample, float]] = []
        # Of the current run, not yet sent on the current connection.
        self._live: list[Sample] = []
        self._sending = False
        # Highest acknowledged seq per (run, instrument): filters what is not
        # yet written, and is applied to the file at the next commit.
        self._acked: dict[tuple[str, str], int] = {}
        self._acks_to_apply: dict[tuple[str, str], int] = {}
        self._gap_acks: list[int] = []
        self._rows = 0
        self._last_id = 0
        self._oldest_in_file: float | None = None
        self._limits_checked = 0.0
        # Backlog still to send on this connection: ids in (after, end].
        self._backlog_after = 0
        self._backlog_end = 0
        self._gaps: dict[int, Gap] = {}
        self._gaps_unsent: list[Gap] = []
        # Ids of gaps given to the current connection.
        self._gaps_sent: set[int] = set()
        self._runs: dict[str, int] = {}
        self._ready = asyncio.Event()
        self._committing: asyncio.Lock | None = None

    # --- life cycle -------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the file, take its lock, and load what an earlier run left."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="kmz-spool")
        self._committing = asyncio.Lock()
        rows, last_id, gaps, runs = await self._call(self._open_blocking)
        self._rows = rows
        self._last_id = last_id
        self._runs = runs
        self._oldest_in_file = await self._call(self._oldest_blocking)
        for gap in gaps:
            assert gap.id is not None
            self._gaps[gap.id] = gap
        if rows or gaps:
            _log.info(
                "spool holds samples from an earlier run; they are sent when the hub is reached",
                extra={"samples": rows, "gaps": len(gaps), "path": str(self.path)},
            )

    async def close(self) -> None:
        """Commit everything taken so far, then release the file."""
        if self._executor is None:
            return
        try:
            await self.commit(everything=True)
        finally:
            await self._call(self._close_blocking)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def run_commits(self) -> None:
        """Commit every `commit_interval_s` until cancelled (the agent runs this as a task)."""
        while True:
            await asyncio.sleep(self.limits.commit_interval_s)
            await self.commit()

    # --- what the runners and the link call ----------------------------------------

    def put(self, sample: Sample) -> None:
        """Take a new sample (on the loop; never blocks)."""
        self._unwritten.append((self.run, sample, time.monotonic()))
        self._runs[self.run] = self._runs.get(self.run, 0) + 1
        if self._sending:
            self._live.append(sample)
            self._ready.set()

    async def start_session(self, run: str) -> None:
        """A connection was welcomed: send `run`'s samples live, and what came before as backlog.

        Live first, then the commit: a sample taken while the commit waits for
        the disk is this connection's, live (found by the hub-kill fault test:
        such samples were neither live nor backlog, and waited for the next
        connection).
        """
        self.run = run
        self._live = []
        self._sending = True
        self._backlog_after = self._backlog_end = 0
        await self.commit(everything=True)
        # Everything in the file now but this run's is the backlog.
        self._backlog_after, self._backlog_end = 0, self._last_id
        self._gaps_unsent = sorted(self._gaps.values(), key=lambda g: g.id or 0)
        self._gaps_sent = set()
        self._ready.set()

    def end_session(self) -> None:
        """The connection ended: what was not acknowledged is backlog for the next one."""
        self._sending = False
        self._live = []
        self._gaps_sent = set()

    async def wait_sendable(self) -> None:
        """Return when there is a live sample, backlog or a gap to send."""
        while not self.sendable:
            self._ready.clear()
            await self._ready.wait()

    @property
    def sendable(self) -> bool:
        """Whether anything waits to be sent on the current connection."""
        return self._sending and bool(
            self._live or self._gaps_unsent or self._backlog_after < self._backlog_end
        )

    def take_live(self, limit: int) -> list[Sample]:
        """The current run's samples not yet sent, oldest first (at most `limit`)."""
        batch, self._live = self._live[:limit], self._live[limit:]
        return batch

    def take_gaps(self) -> list[Gap]:
        """Gaps the hub has not acknowledged and was not told about on this connection."""
        gaps, self._gaps_unsent = self._gaps_unsent, []
        # Sent as they are now: a later drop starts a gap of its own.
        self._gaps_sent.update(g.id for g in gaps if g.id is not None)
        return gaps

    async def take_backlog(self, limit: int) -> tuple[str, list[Sample]] | None:
        """The next backlog samples of one run, oldest first; None once the backlog is sent."""
        if self._backlog_after >= self._backlog_end:
            return None
        after, end = self._backlog_after, self._backlog_end
        last, run, samples = await self._call(self._read_blocking, after, end, limit, self.run)
        if last is None:
            self._backlog_after = end
            return None
        self._backlog_after = last
        return run, samples

    def acknowledge(self, run: str, seqs: Mapping[str, int]) -> None:
        """The hub logged `run`'s samples up to these seqs: forget them at the next commit."""
        for instrument, seq in seqs.items():
            key = (run, instrument)
            if seq > self._acked.get(key, -1):
                self._acked[key] = seq
                self._acks_to_apply[key] = seq

    def acknowledged_seq(self, run: str, instrument: str) -> int:
        """The newest seq of `run`'s samples of `instrument` the hub acknowledged (-1: none)."""
        return self._acked.get((run, instrument), -1)

    def acknowledge_gaps(self, ids: list[int]) -> None:
        """The hub logged these gaps."""
        for gap_id in ids:
            if self._gaps.pop(gap_id, None) is not None:
                self._gap_acks.append(gap_id)

    async def commit(self, everything: bool = False) -> None:
        """Write what was taken and not acknowledged, apply acks and the limits, in one commit.

        While connected, a sample younger than `hold_s` waits for the next
        commit: the hub acknowledges within about 0.6 s, so in steady
        operation almost nothing is written (measured: 400 bytes per sample
        without the hold, see benchmarks/spool_io.py). Disconnected, or with
        `everything`, all of it is written.
        """
        if self._executor is None or self._committing is None:
            return
        async with self._committing:
            acked = self._acked
            # Acknowledged: forgotten, written or not. Not yet: written if
            # older than the hold (or everything goes), else kept for later.
            cutoff = time.monotonic() - self.limits.hold_s
            hold = not everything and self._sending
            rows = []
            kept: list[tuple[str, Sample, float]] = []
            for entry in self._unwritten:
                run, sample, taken = entry
                if sample.seq <= acked.get((run, sample.instrument), -1):
                    self._forget_one(run)
                elif hold and (kept or taken > cutoff):
                    kept.append(entry)  # the young ones are a suffix: taken in order
                else:
                    rows.append((run, sample.instrument, sample.seq, sample.ts, _encode(sample)))
            self._unwritten = kept
            now = time.time()
            mergeable: dict[tuple[str, str], Gap] = {}
            for gap_id in sorted(self._gaps):  # the newest wins
                if gap_id not in self._gaps_sent:
                    gap = self._gaps[gap_id]
                    mergeable[(gap.run, gap.instrument)] = gap
            work = _Commit(rows, self._acks_to_apply, self._gap_acks, now, self._rows, mergeable)
            self._acks_to_apply, self._gap_acks = {}, []
            if not (work.rows or work.acks or work.gap_acks or self._limits_due(now)):
                return
            done = await self._call(self._commit_blocking, work)
            self._limits_checked = now
        self._rows = done.rows
        self._last_id = done.last_id
        self._oldest_in_file = done.oldest_ts
        for run, removed in done.runs.items():
            self._forget_one(run, removed)
        for key in [k for k in self._acked if k[0] not in self._runs]:
            del self._acked[key]
        for gap in done.gaps:
            assert gap.id is not None
            before = self._gaps.get(gap.id)
            self._gaps[gap.id] = gap
            self.dropped += gap.count - (before.count if before is not None else 0)
            if self._sending:
                queued = [i for i, g in enumerate(self._gaps_unsent) if g.id == gap.id]
                if queued:
                    self._gaps_unsent[queued[0]] = gap
                else:
                    self._gaps_unsent.append(gap)
                self._ready.set()
            _log.warning(
                "spool full: oldest samples dropped",
                extra={
                    "instrument": gap.instrument,
                    "run": gap.run,
                    "seqs": f"{gap.first_seq}..{gap.last_seq}",
                    "count": gap.count,
                    "reason": gap.reason,
                },
            )

    # --- what is visible -------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Samples not yet acknowledged by the hub (committed or not)."""
        return sum(self._runs.values())

    @property
    def oldest(self) -> float | None:
        """Time of the oldest sample not yet acknowledged (as of the last commit), if any."""
        if self._oldest_in_file is not None:
            return self._oldest_in_file
        return self._unwritten[0][1].ts if self._unwritten else None

    @property
    def committed_rows(self) -> int:
        """Samples in the file (acknowledged ones go at the next commit)."""
        return self._rows

    # --- internals ----------------------------------------------------------------

    def _forget_one(self, run: str, count: int = 1) -> None:
        left = self._runs.get(run, 0) - count
        if left > 0 or run == self.run:
            self._runs[run] = max(left, 0)
        else:
            self._runs.pop(run, None)
            for key in [k for k in self._acked if k[0] == run]:
                del self._acked[key]

    def _limits_due(self, now: float) -> bool:
        """Whether an idle spool should look at its limits now (age passes without writes)."""
        return self._rows > 0 and (
            self._rows > self.limits.max_samples or now - self._limits_checked >= _AGE_CHECK_S
        )

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        assert self._executor is not None, "spool not open"
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # --- on the spool's thread ------------------------------------------------------

    def _open_blocking(self) -> tuple[int, int, list[Gap], dict[str, int]]:
        target = ":memory:"
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock_file = _lock(self.path)
            except OSError as exc:
                raise SpoolError(
                    f"spool {self.path}: cannot create or lock it: {exc.strerror or exc}"
                ) from None
            target = str(self.path)
        try:
            db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed sample survives a power cut, not only a kill.
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SpoolError(
                    f"spool {self.path}: written by a newer kleinmaelzung (schema {version}, "
                    f"this one knows {SCHEMA_VERSION}); upgrade, or move the file away"
                )
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            rows = db.execute("SELECT count(*) FROM samples").fetchone()[0]
            last_id = db.execute("SELECT coalesce(max(id), 0) FROM samples").fetchone()[0]
            runs = dict(db.execute("SELECT run, count(*) FROM samples GROUP BY run").fetchall())
            gaps = [
                Gap(
                    id=gid,
                    run=run,
                    instrument=instrument,
                    first_seq=first,
                    last_seq=last,
                    count=count,
                    reason=reason,
                )
                for gid, run, instrument, first, last, count, reason in db.execute(
                    "SELECT id, run, instrument, first_seq, last_seq, count, reason FROM gaps"
                    " ORDER BY id"
                )
            ]
        except sqlite3.DatabaseError as exc:
            self._close_blocking()
            raise SpoolError(f"spool {self.path}: cannot use it: {exc}") from None
        self._db = db
        return rows, last_id, gaps, runs

    def _oldest_blocking(self) -> float | None:
        assert self._db is not None
        row = self._db.execute("SELECT ts FROM samples ORDER BY id LIMIT 1").fetchone()
        return float(row[0]) if row else None

    def _close_blocking(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def _commit_blocking(self, work: _Commit) -> _Committed:
        db = self._db
        assert db is not None
        removed: dict[str, int] = {}
        gaps: list[Gap] = []
        with _transaction(db):
            db.executemany(
                "INSERT INTO samples (run, instrument, seq, ts, sample) VALUES (?, ?, ?, ?, ?)",
                work.rows,
            )
            for (run, instrument), seq in work.acks.items():
                cursor = db.execute(
                    "DELETE FROM samples WHERE run = ? AND instrument = ? AND seq <= ?",
                    (run, instrument, seq),
                )
                if cursor.rowcount > 0:
                    removed[run] = removed.get(run, 0) + cursor.rowcount
            if work.gap_acks:
                db.executemany("DELETE FROM gaps WHERE id = ?", [(g,) for g in work.gap_acks])
            rows = work.rows_before + len(work.rows) - sum(removed.values())
            cutoff = self._drop_cutoff(db, rows, work.now - self.limits.max_age_s)
            if cutoff is not None:
                cutoff_id, reason = cutoff
                for run, instrument, first, last, count in db.execute(
                    "SELECT run, instrument, min(seq), max(seq), count(*) FROM samples"
                    " WHERE id <= ? GROUP BY run, instrument ORDER BY min(id)",
                    (cutoff_id,),
                ).fetchall():
                    removed[run] = removed.get(run, 0) + count
                    earlier = work.mergeable.get((run, instrument))
                    if earlier is not None and earlier.id is not None:
                        merged = msgspec.structs.replace(
                            earlier,
                            first_seq=min(earlier.first_seq, first),
                            last_seq=max(earlier.last_seq, last),
                            count=earlier.count + count,
                            reason=reason,
                        )
                        db.execute(
                            "UPDATE gaps SET first_seq = ?, last_seq = ?, count = ?, reason = ?"
                            " WHERE id = ?",
                            (merged.first_seq, merged.last_seq, merged.count, reason, earlier.id),
                        )
                        work.mergeable[(run, instrument)] = merged
                        gaps.append(merged)
                        continue
                    cursor = db.execute(
                        "INSERT INTO gaps (run, instrument, first_seq, last_seq, count, reason)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (run, instrument, first, last, count, reason),
                    )
                    gaps.append(
                        Gap(
                            id=cursor.lastrowid,
                            run=run,
                            instrument=instrument,
                            first_seq=first,
                            last_seq=last,
                            count=count,
                            reason=reason,
                        )
                    )
                dropped = db.execute("DELETE FROM samples WHERE id <= ?", (cutoff_id,)).rowcount
                rows -= dropped
            last_id = db.execute("SELECT coalesce(max(id), 0) FROM samples").fetchone()[0]
            oldest = db.execute("SELECT ts FROM samples ORDER BY id LIMIT 1").fetchone()
        return _Committed(
            rows=rows,
            last_id=last_id,
            oldest_ts=oldest[0] if oldest else None,
            gaps=gaps,
            runs=removed,
        )

    def _drop_cutoff(
        self, db: sqlite3.Connection, rows: int, oldest_ts: float
    ) -> tuple[int, str] | None:
        """The highest id to drop, and why; None if within the limits."""
        cutoff: int | None = None
        reason = ""
        over = rows - self.limits.max_samples
        if over > 0:
            row = db.execute(
                "SELECT id FROM samples ORDER BY id LIMIT 1 OFFSET ?", (over - 1,)
            ).fetchone()
            if row is not None:
                cutoff = row[0]
                reason = f"spool full (max_samples = {self.limits.max_samples})"
        # Ids follow time, so the samples older than the limit are a prefix:
        # this reads only those, and the first one kept.
        fresh = db.execute(
            "SELECT id FROM samples WHERE ts >= ? ORDER BY id LIMIT 1", (oldest_ts,)
        ).fetchone()
        if fresh is None:
            aged = db.execute("SELECT max(id) FROM samples").fetchone()[0]
        else:
            aged = db.execute("SELECT max(id) FROM samples WHERE id < ?", (fresh[0],)).fetchone()[0]
        if aged is not None and (cutoff is None or aged > cutoff):
            cutoff = aged
            reason = f"older than the spool keeps (max_age_s = {self.limits.max_age_s:g})"
        return (cutoff, reason) if cutoff is not None else None

    def _read_blocking(
        self, after: int, end: int, limit: int, live_run: str
    ) -> tuple[int | None, str, list[Sample]]:
        db = self._db
        assert db is not None
        # The live run's own rows are not backlog: they were sent live.
        rows = db.execute(
            "SELECT id, run, sample FROM samples WHERE id > ? AND id <= ? AND run != ?"
            " ORDER BY id LIMIT ?",
            (after, end, live_run, limit),
        ).fetchall()
        if not rows:
            return None, "", []
        run = rows[0][1]
        samples: list[Sample] = []
        last = after
        for row_id, row_run, blob in rows:
            if row_run != run:
                break  # one run per frame
            samples.append(_decode_sample(blob))
            last = row_id
        return last, run, samples


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _lock(path: Path) -> int:
    """Hold `path`.lock for this process: two agents on one spool would resend each other's."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise SpoolError(
            f"spool {path} is in use by {holder}: is another agent with this spool running? "
            "Give each agent its own spool"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"agent process {os.getpid()}".encode())
    return fd


def default_spool_path(agent_id: str) -> Path:
    """`$XDG_STATE_HOME/kleinmaelzung/spool-AGENT.sqlite` (~/.local/state by default)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "kleinmaelzung" / f"spool-{agent_id}.sqlite"
