"""Where the hub keeps calibration records, procedures, standards and instrument metadata.

`CalibrationStore` is the interface the hub's calibration service uses
(`calibration_service`); `SqliteCalibrationStore` keeps it in
one SQLite file beside the traffic log. It moves to the storage-engine
backends when they offer documents; until then it is its own small store.

Immutability is enforced twice: the store refuses to overwrite an approved
revision, and the database's triggers refuse any UPDATE or DELETE of one, so
a bug (or a hand with sqlite3) cannot quietly change what was signed.
Procedure versions are immutable too: a changed procedure is a new version.

Instrument metadata (`InstrumentMetadata`: description, location, group,
owner, calibration interval) lives here too, in `instrument_metadata`, for
every instrument the lab names, calibrated or not: admins change it through
`instrument_metadata`. The calibration registry's row keeps what only a
certificate needs (manufacturer, model, serial number, resolution, unit,
channel, next due date); its description, location and interval are read
from the metadata, so each fact is kept once: `save_instrument` moves those
it is given into the metadata, in the same transaction.
"""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import msgspec

from ..calibration import (
    CalibrationError,
    CalibrationRecord,
    Correction,
    Instrument,
    Laboratory,
    Procedure,
    RecordLocked,
    ReferenceStandard,
    content_hash,
    is_approved,
    verify,
)
from ..calibration.api import RecordSummary
from ..protocol import InstrumentMetadata

_T = TypeVar("_T")

__all__ = [
    "CalibrationStore",
    "Conflict",
    "HeldMetadata",
    "NotFound",
    "RecordSummary",
    "SqliteCalibrationStore",
]


class HeldMetadata(msgspec.Struct, frozen=True):
    """One instrument's metadata as the store holds it, with who set it last and when."""

    instrument: str
    metadata: InstrumentMetadata
    updated_by: str
    #: Hub time; None for metadata moved out of the calibration registry.
    updated_at: float | None


class NotFound(CalibrationError):
    """No record, procedure, standard or instrument by that name."""

    code = "not_found"


class Conflict(CalibrationError):
    """The store already holds something different under that key."""

    code = "conflict"


class CalibrationStore(Protocol):
    """Durable calibration records and the registries they draw on."""

    def exists(self) -> bool:
        """Whether the store was ever created (opening creates it)."""

    async def open(self) -> None:
        """Create or open the store."""

    async def close(self) -> None:
        """Release it."""

    async def allocate_certificate_number(self, year: int, prefix: str = "KMZ") -> str:
        """A certificate number never handed out before: ``KMZ-2026-0001``, ``-0002``, ..."""

    async def save_draft(self, record: CalibrationRecord) -> None:
        """Insert or replace an unapproved revision; an approved one is refused."""

    async def save_approved(self, record: CalibrationRecord) -> None:
        """Store an approved revision (signatures verified); it can never change again."""

    async def record(
        self, certificate_number: str, revision: int | None = None
    ) -> CalibrationRecord:
        """One revision, the latest by default."""

    async def revisions(self, certificate_number: str) -> list[RecordSummary]:
        """Every revision of one certificate, oldest first."""

    async def records(self, instrument_id: str | None = None) -> list[RecordSummary]:
        """The latest revision of each certificate, newest calibration first."""

    async def save_procedure(self, procedure: Procedure) -> None:
        """Store a procedure version; the same version with other content is refused."""

    async def procedure(self, name: str, version: int | None = None) -> Procedure:
        """A procedure version, the highest by default."""

    async def save_standard(self, standard: ReferenceStandard) -> None:
        """Register or update a reference standard (a new certificate, a new due date)."""

    async def standard(self, standard_id: str) -> ReferenceStandard:
        """One reference standard."""

    async def save_instrument(self, instrument: Instrument) -> None:
        """Register or update an instrument's certificate facts (its next due date, say)."""

    async def instrument(self, instrument_id: str) -> Instrument:
        """One instrument's certificate facts, with its metadata's shared ones."""

    async def due(self, today: datetime.date, within_days: int = 0) -> list[Instrument]:
        """Instruments whose next calibration is due by ``today + within_days``, soonest first."""

    async def instruments(self) -> list[Instrument]:
        """Every registered instrument, by id."""

    async def standards(self) -> list[ReferenceStandard]:
        """Every registered reference standard, by id."""

    async def procedures(self) -> list[Procedure]:
        """The highest version of each procedure, by name."""

    async def save_laboratory(self, laboratory: Laboratory) -> None:
        """Set the laboratory that issues certificates."""

    async def laboratory(self) -> Laboratory:
        """The laboratory that issues certificates."""

    async def save_correction(self, correction: Correction) -> None:
        """Keep a correction version (applied, or withdrawn since)."""

    async def corrections(self) -> list[Correction]:
        """Every correction version, oldest first."""

    async def metadata(self) -> list[HeldMetadata]:
        """Every instrument's metadata, by id."""

    async def save_metadata(self, held: HeldMetadata) -> None:
        """Set one instrument's metadata; an empty one is removed."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS calibration_records (
    certificate_number TEXT NOT NULL,
    revision INTEGER NOT NULL,
    instrument_id TEXT NOT NULL,
    calibrated_on TEXT NOT NULL,
    approved INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (certificate_number, revision)
);
CREATE INDEX IF NOT EXISTS calibration_records_instrument
    ON calibration_records (instrument_id, calibrated_on);
-- What was approved stays as it was approved.
CREATE TRIGGER IF NOT EXISTS calibration_records_approved_no_update
    BEFORE UPDATE ON calibration_records WHEN OLD.approved = 1
    BEGIN SELECT RAISE(ABORT, 'approved calibration records are immutable'); END;
CREATE TRIGGER IF NOT EXISTS calibration_records_approved_no_delete
    BEFORE DELETE ON calibration_records WHEN OLD.approved = 1
    BEGIN SELECT RAISE(ABORT, 'approved calibration records are immutable'); END;
CREATE TABLE IF NOT EXISTS calibration_procedures (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    procedure BLOB NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TRIGGER IF NOT EXISTS calibration_procedures_no_update
    BEFORE UPDATE ON calibration_procedures
    BEGIN SELECT RAISE(ABORT, 'procedure versions are immutable'); END;
CREATE TABLE IF NOT EXISTS calibration_standards (
    id TEXT PRIMARY KEY,
    standard BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS calibration_instruments (
    id TEXT PRIMARY KEY,
    next_due TEXT,
    instrument BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS calibration_settings (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
-- One row per correction version; only withdrawing changes a row.
CREATE TABLE IF NOT EXISTS calibration_corrections (
    calibration TEXT PRIMARY KEY,
    instrument_id TEXT NOT NULL,
    valid_from REAL NOT NULL,
    correction BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS instrument_metadata (
    id TEXT PRIMARY KEY,
    metadata BLOB NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS calibration_numbers (
    prefix TEXT NOT NULL,
    year INTEGER NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (prefix, year)
);
"""

_encode = msgspec.json.Encoder(order="sorted").encode


class SqliteCalibrationStore:
    """`CalibrationStore` in one SQLite file; calls run in worker threads, one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        # One connection shared by worker threads, one call at a time: these
        # are a few writes a day, not the traffic log's thousands a second.
        self._lock = threading.Lock()

    def exists(self) -> bool:
        """Whether the file exists."""
        return self.path.exists()

    async def open(self) -> None:
        """Create the file and tables."""
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.path, isolation_level=None, timeout=5.0, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")  # a signed record survives power loss
            connection.executescript(_SCHEMA)
            _move_shared_facts(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    async def close(self) -> None:
        """Close the file."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await asyncio.to_thread(connection.close)

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        def locked() -> _T:
            connection = self._connection
            if connection is None:
                raise RuntimeError("the calibration store is not open")
            with self._lock:
                return work(connection)

        return await asyncio.to_thread(locked)

    # --- certificate numbers ----------------------------------------------------

    async def allocate_certificate_number(self, year: int, prefix: str = "KMZ") -> str:
        """The next number of ``prefix`` in ``year``, counted in the database."""

        def allocate(connection: sqlite3.Connection) -> str:
            with _transaction(connection):
                connection.execute(
                    "INSERT INTO calibration_numbers (prefix, year, last) VALUES (?, ?, 1) "
                    "ON CONFLICT (prefix, year) DO UPDATE SET last = last + 1",
                    (prefix, year),
                )
                (last,) = connection.execute(
                    "SELECT last FROM calibration_numbers WHERE prefix = ? AND year = ?",
                    (prefix, year),
                ).fetchone()
            return f"{prefix}-{year}-{last:04d}"

        return await self._run(allocate)

    # --- records ------------------------------------------------------------------

    async def save_draft(self, record: CalibrationRecord) -> None:
        """Insert or replace an unapproved revision."""
        if is_approved(record):
            raise Conflict("an approved record is stored with save_approved")
        await self._run(lambda c: self._put_record(c, record, approved=False))

    async def save_approved(self, record: CalibrationRecord) -> None:
        """Store an approved revision; storing the identical one again is a no-op."""
        if not is_approved(record):
            raise Conflict(f"calibration {record.certificate_number} is not approved")
        verify(record)
        await self._run(lambda c: self._put_record(c, record, approved=True))

    @staticmethod
    def _put_record(
        connection: sqlite3.Connection, record: CalibrationRecord, *, approved: bool
    ) -> None:
        digest = content_hash(record)
        key = (record.certificate_number, record.revision)
        with _transaction(connection):
            row = connection.execute(
                "SELECT approved, content_hash, record FROM calibration_records "
                "WHERE certificate_number = ? AND revision = ?",
                key,
            ).fetchone()
            if row is not None and row[0]:
                if approved and row[1] == digest and row[2] == _encode(record):
                    return
                raise RecordLocked(
                    f"calibration {record.certificate_number} revision {record.revision} is "
                    "approved and cannot change; make a correction (a new revision) instead"
                )
            if record.supersedes is not None:
                previous = connection.execute(
                    "SELECT approved, content_hash FROM calibration_records "
                    "WHERE certificate_number = ? AND revision = ?",
                    (record.supersedes.certificate_number, record.supersedes.revision),
                ).fetchone()
                if (
                    previous is None
                    or not previous[0]
                    or previous[1] != record.supersedes.content_hash
                ):
                    raise Conflict(
                        f"revision {record.revision} must correct the approved revision "
                        f"{record.supersedes.revision} as stored"
                    )
            elif record.revision != 1:
                raise Conflict("a revision after the first must name the revision it corrects")
            connection.execute(
                "INSERT INTO calibration_records (certificate_number, revision, instrument_id, "
                "calibrated_on, approved, content_hash, record) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (certificate_number, revision) DO UPDATE SET "
                "instrument_id = excluded.instrument_id, calibrated_on = excluded.calibrated_on, "
                "approved = excluded.approved, content_hash = excluded.content_hash, "
                "record = excluded.record",
                (
                    *key,
                    record.instrument.id,
                    record.calibrated_on.isoformat(),
                    int(approved),
                    digest,
                    _encode(record),
                ),
            )

    async def record(
        self, certificate_number: str, revision: int | None = None
    ) -> CalibrationRecord:
        """One revision, the latest by default."""

        def fetch(connection: sqlite3.Connection) -> bytes:
            if revision is None:
                row = connection.execute(
                    "SELECT record FROM calibration_records WHERE certificate_number = ? "
                    "ORDER BY revision DESC LIMIT 1",
                    (certificate_number,),
                ).fetchone()
            else:
                row = connection.execute(
                    "SELECT record FROM calibration_records "
                    "WHERE certificate_number = ? AND revision = ?",
                    (certificate_number, revision),
                ).fetchone()
            if row is None:
                which = "" if revision is None else f" revision {revision}"
                raise NotFound(f"no calibration {certificate_number}{which}")
            return bytes(row[0])

        return msgspec.json.decode(await self._run(fetch), type=CalibrationRecord)

    async def revisions(self, certificate_number: str) -> list[RecordSummary]:
        """Every revision of one certificate, oldest first."""
        return await self._summaries(
            "WHERE certificate_number = ? ORDER BY revision", (certificate_number,)
        )

    async def records(self, instrument_id: str | None = None) -> list[RecordSummary]:
        """The latest revision of each certificate, newest calibration first."""
        latest = (
            "WHERE revision = (SELECT MAX(revision) FROM calibration_records AS r "
            "WHERE r.certificate_number = calibration_records.certificate_number)"
        )
        if instrument_id is None:
            return await self._summaries(
                f"{latest} ORDER BY calibrated_on DESC, certificate_number DESC", ()
            )
        return await self._summaries(
            f"{latest} AND instrument_id = ? ORDER BY calibrated_on DESC, certificate_number DESC",
            (instrument_id,),
        )

    async def _summaries(self, where: str, parameters: tuple[str, ...]) -> list[RecordSummary]:
        def fetch(connection: sqlite3.Connection) -> list[RecordSummary]:
            rows = connection.execute(
                "SELECT certificate_number, revision, instrument_id, calibrated_on, approved, "
                f"content_hash FROM calibration_records {where}",
                parameters,
            ).fetchall()
            return [
                RecordSummary(
                    certificate_number=row[0],
                    revision=row[1],
                    instrument_id=row[2],
                    calibrated_on=datetime.date.fromisoformat(row[3]),
                    approved=bool(row[4]),
                    content_hash=row[5],
                )
                for row in rows
            ]

        return await self._run(fetch)

    # --- procedures ---------------------------------------------------------------

    async def save_procedure(self, procedure: Procedure) -> None:
        """Store a version; the same content again is a no-op, other content a `Conflict`."""
        encoded = _encode(procedure)

        def put(connection: sqlite3.Connection) -> None:
            with _transaction(connection):
                row = connection.execute(
                    "SELECT procedure FROM calibration_procedures WHERE name = ? AND version = ?",
                    (procedure.name, procedure.version),
                ).fetchone()
                if row is not None:
                    if bytes(row[0]) != encoded:
                        raise Conflict(
                            f"procedure {procedure.name} version {procedure.version} exists with "
                            "other content; give the changed procedure a new version"
                        )
                    return
                connection.execute(
                    "INSERT INTO calibration_procedures (name, version, procedure) "
                    "VALUES (?, ?, ?)",
                    (procedure.name, procedure.version, encoded),
                )

        await self._run(put)

    async def procedure(self, name: str, version: int | None = None) -> Procedure:
        """A procedure version, the highest by default."""

        def fetch(connection: sqlite3.Connection) -> bytes:
            if version is None:
                row = connection.execute(
                    "SELECT procedure FROM calibration_procedures WHERE name = ? "
                    "ORDER BY version DESC LIMIT 1",
                    (name,),
                ).fetchone()
            else:
                row = connection.execute(
                    "SELECT procedure FROM calibration_procedures WHERE name = ? AND version = ?",
                    (name, version),
                ).fetchone()
            if row is None:
                which = "" if version is None else f" version {version}"
                raise NotFound(f"no procedure {name}{which}")
            return bytes(row[0])

        return msgspec.json.decode(await self._run(fetch), type=Procedure)

    # --- registries -----------------------------------------------------------------

    async def save_standard(self, standard: ReferenceStandard) -> None:
        """Register or update a reference standard."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO calibration_standards (id, standard) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET standard = excluded.standard",
                (standard.id, _encode(standard)),
            )
        )

    async def standard(self, standard_id: str) -> ReferenceStandard:
        """One reference standard."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT standard FROM calibration_standards WHERE id = ?", (standard_id,)
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"no reference standard {standard_id}")
        return msgspec.json.decode(bytes(row[0]), type=ReferenceStandard)

    async def save_instrument(self, instrument: Instrument) -> None:
        """Register or update an instrument; the shared facts it gives go to its metadata."""

        def put(connection: sqlite3.Connection) -> None:
            with _transaction(connection):
                _put_instrument(connection, instrument)

        await self._run(put)

    async def instrument(self, instrument_id: str) -> Instrument:
        """One instrument's certificate facts, with its metadata's shared ones."""
        rows = await self._run(
            lambda c: c.execute(f"{_INSTRUMENTS} WHERE i.id = ?", (instrument_id,)).fetchall()
        )
        if not rows:
            raise NotFound(f"no instrument {instrument_id} in the calibration registry")
        return _merged(rows[0])

    async def due(self, today: datetime.date, within_days: int = 0) -> list[Instrument]:
        """Instruments due by ``today + within_days`` (overdue ones too), soonest first."""
        limit = (today + datetime.timedelta(days=within_days)).isoformat()
        rows = await self._run(
            lambda c: c.execute(
                f"{_INSTRUMENTS} WHERE i.next_due IS NOT NULL AND i.next_due <= ? "
                "ORDER BY i.next_due, i.id",
                (limit,),
            ).fetchall()
        )
        return [_merged(row) for row in rows]

    async def instruments(self) -> list[Instrument]:
        """Every registered instrument, by id."""
        rows = await self._run(lambda c: c.execute(f"{_INSTRUMENTS} ORDER BY i.id").fetchall())
        return [_merged(row) for row in rows]

    async def standards(self) -> list[ReferenceStandard]:
        """Every registered reference standard, by id."""
        rows = await self._run(
            lambda c: c.execute("SELECT standard FROM calibration_standards ORDER BY id").fetchall()
        )
        return [msgspec.json.decode(bytes(row[0]), type=ReferenceStandard) for row in rows]

    async def procedures(self) -> list[Procedure]:
        """The highest version of each procedure, by name."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT procedure FROM calibration_procedures AS p WHERE version = "
                "(SELECT MAX(version) FROM calibration_procedures AS q WHERE q.name = p.name) "
                "ORDER BY name"
            ).fetchall()
        )
        return [msgspec.json.decode(bytes(row[0]), type=Procedure) for row in rows]

    async def save_laboratory(self, laboratory: Laboratory) -> None:
        """Set the laboratory that issues certificates."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO calibration_settings (key, value) VALUES ('laboratory', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (_encode(laboratory),),
            )
        )

    async def laboratory(self) -> Laboratory:
        """The laboratory that issues certificates."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT value FROM calibration_settings WHERE key = 'laboratory'"
            ).fetchone()
        )
        if row is None:
            raise NotFound(
                "no laboratory is registered: register one first "
                "(kmz calibration register laboratory FILE.toml)"
            )
        return msgspec.json.decode(bytes(row[0]), type=Laboratory)

    async def save_correction(self, correction: Correction) -> None:
        """Keep a correction version; a withdrawn one may replace its applied row only."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO calibration_corrections (calibration, instrument_id, valid_from, "
                "correction) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (calibration) DO UPDATE SET correction = excluded.correction",
                (
                    correction.calibration,
                    correction.instrument_id,
                    correction.valid_from,
                    _encode(correction),
                ),
            )
        )

    async def corrections(self) -> list[Correction]:
        """Every correction version, oldest first."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT correction FROM calibration_corrections ORDER BY valid_from"
            ).fetchall()
        )
        return [msgspec.json.decode(bytes(row[0]), type=Correction) for row in rows]

    async def metadata(self) -> list[HeldMetadata]:
        """Every instrument's metadata, by id."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT id, metadata, updated_by, updated_at FROM instrument_metadata ORDER BY id"
            ).fetchall()
        )
        return [HeldMetadata(row[0], _decode_metadata(row[1]), row[2], row[3]) for row in rows]

    async def save_metadata(self, held: HeldMetadata) -> None:
        """Set one instrument's metadata; an empty one is removed."""

        def put(connection: sqlite3.Connection) -> None:
            if held.metadata == _NO_METADATA:
                connection.execute(
                    "DELETE FROM instrument_metadata WHERE id = ?", (held.instrument,)
                )
                return
            connection.execute(
                "INSERT INTO instrument_metadata (id, metadata, updated_by, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET metadata = excluded.metadata, "
                "updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                (held.instrument, _encode(held.metadata), held.updated_by, held.updated_at),
            )

        await self._run(put)


_NO_METADATA = InstrumentMetadata()
_decode_metadata = msgspec.json.Decoder(InstrumentMetadata).decode
#: An instrument's certificate facts with its metadata beside them.
_INSTRUMENTS = (
    "SELECT i.instrument, m.metadata FROM calibration_instruments AS i "
    "LEFT JOIN instrument_metadata AS m ON m.id = i.id"
)


def _strip(instrument: Instrument) -> Instrument:
    """The certificate facts alone: what the metadata holds is kept there only."""
    return msgspec.structs.replace(
        instrument, description="", location="", calibration_interval_days=None
    )


def _merged(row: tuple[bytes, bytes | None]) -> Instrument:
    """A registry row with its instrument's metadata in place of the shared facts."""
    instrument = msgspec.json.decode(bytes(row[0]), type=Instrument)
    if row[1] is None:
        return instrument
    held = _decode_metadata(bytes(row[1]))
    return msgspec.structs.replace(
        instrument,
        description=held.description or instrument.description,
        location=held.location or instrument.location,
        calibration_interval_days=held.calibration_interval_days
        or instrument.calibration_interval_days,
    )


def _put_instrument(connection: sqlite3.Connection, instrument: Instrument) -> None:
    """Store the certificate facts; the shared ones it gives (not empty) into its metadata."""
    row = connection.execute(
        "SELECT metadata FROM instrument_metadata WHERE id = ?", (instrument.id,)
    ).fetchone()
    before = _decode_metadata(bytes(row[0])) if row is not None else _NO_METADATA
    metadata = msgspec.structs.replace(
        before,
        description=instrument.description or before.description,
        location=instrument.location or before.location,
        calibration_interval_days=instrument.calibration_interval_days
        or before.calibration_interval_days,
    )
    if metadata != before:
        connection.execute(
            "INSERT INTO instrument_metadata (id, metadata, updated_by, updated_at) "
            "VALUES (?, ?, 'calibration registry', NULL) ON CONFLICT (id) DO UPDATE SET "
            "metadata = excluded.metadata, updated_by = excluded.updated_by, "
            "updated_at = excluded.updated_at",
            (instrument.id, _encode(metadata)),
        )
    due = instrument.next_due.isoformat() if instrument.next_due else None
    connection.execute(
        "INSERT INTO calibration_instruments (id, next_due, instrument) VALUES (?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET next_due = excluded.next_due, "
        "instrument = excluded.instrument",
        (instrument.id, due, _encode(_strip(instrument))),
    )


def _move_shared_facts(connection: sqlite3.Connection) -> None:
    """Move description, location and interval out of registry rows written before metadata.

    What a row gives wins, as a registration's does. Runs on every open and
    finds nothing to do once done.
    """
    with _transaction(connection):
        for (blob,) in connection.execute(
            "SELECT instrument FROM calibration_instruments"
        ).fetchall():
            stored = msgspec.json.decode(bytes(blob), type=Instrument)
            if stored != _strip(stored):
                _put_instrument(connection, stored)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self._connection.execute("COMMIT" if kind is None else "ROLLBACK")
