"""The hub's calibration service: runs, captures from the log, sign-off, corrections, due dates.

The REST routes (`calibration_routes`) call it with the authenticated
person; it is the only writer of the calibration store and of the hub's
active corrections (`Hub.corrections`). Every step that changes something
is logged in the traffic log as a ``calibration`` entry (who, what, the
record's content hash afterwards), and every refusal as a ``refused`` one.

Readings are captured from the hub's own log, never from what a client
says it saw (`calibration_capture`).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import math
from collections import OrderedDict
from typing import TYPE_CHECKING

import msgspec

from ..calibration import (
    CalibrationError,
    CalibrationFailed,
    CalibrationRecord,
    Correction,
    Customer,
    EnvironmentRecord,
    Instrument,
    Laboratory,
    PointResult,
    Procedure,
    Reading,
    ReferenceStandard,
    add_point,
    add_reading,
    approve,
    calibration_id,
    check_usable,
    content_hash,
    correct,
    correction_from_record,
    evaluate,
    is_approved,
    parse_procedure,
    reopen,
    set_adjustment,
    set_environment,
    sign_performed,
)
from ..calibration.api import (
    Capture,
    DueEntry,
    EnvironmentEntry,
    ManualReading,
    RecordView,
    StartRun,
    summarize,
)
from ..calibration.model import Phase
from .calibration_capture import accept_reading, recent_samples, with_live_environment
from .calibrations import CalibrationStore, Conflict, NotFound, RecordSummary
from .instrument_metadata import MetadataService

if TYPE_CHECKING:
    from .auth import Principal
    from .services import Hub

_log = logging.getLogger(__name__)

#: How often the expiry of calibrations is checked (besides after each change).
EXPIRY_CHECK_S = 600.0
#: Rendered certificates kept (approved ones never change).
PDF_CACHE = 16


class Forbidden(CalibrationError):
    """The person may not take this step."""

    code = "forbidden"


class CalibrationService:
    """Calibration records and registries for the hub's REST API; see the module docstring."""

    def __init__(self, store: CalibrationStore, hub: Hub) -> None:
        self.calibrations = store
        self._hub = hub
        # One step at a time: a step reads a draft, changes it and saves it.
        self._lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self._opened = False
        self._renderer: object | None = None
        self._render_lock = asyncio.Lock()
        self._pdfs: OrderedDict[str, bytes] = OrderedDict()
        #: Instrument id -> what its newest approved calibration, failed, says of it.
        self._failed: dict[str, str] = {}
        #: Description, location and interval of instruments: kept there, once.
        self.metadata = MetadataService(self, hub)

    async def open(self) -> None:
        """Open the store, if there is one, and apply the corrections still in force.

        A hub that never kept a calibration creates no file for them (a hub
        given a data folder it does not use must leave it alone): the store
        is created by the first request (`ready`).
        """
        if self.calibrations.exists():
            await self.ready()
            self._hub.corrections.load(await self.calibrations.corrections())
            await self._load_verdicts()
            await self.note_expired()

    async def ready(self) -> None:
        """Open (and so create) the store, once."""
        async with self._open_lock:
            if not self._opened:
                await self.calibrations.open()
                self._opened = True

    async def note_expired(self) -> None:
        """Have instruments say in their listed status that their calibration failed or expired."""
        today = self.today()
        notes = dict(self._failed)
        for instrument in await self.calibrations.due(today, -1):
            if instrument.next_due is not None:
                expired = f"calibration expired on {instrument.next_due.isoformat()}"
                notes[instrument.id] = "; ".join(filter(None, (notes.get(instrument.id), expired)))
        self._hub.registry.set_calibration_notes(notes)

    async def _load_verdicts(self) -> None:
        """Which instruments' newest approved calibration failed (once, when the hub starts)."""
        seen: set[str] = set()
        for summary in await self.calibrations.records():  # newest calibration first
            if not summary.approved or summary.instrument_id in seen:
                continue
            seen.add(summary.instrument_id)
            record = await self.calibrations.record(summary.certificate_number, summary.revision)
            try:
                verdict = evaluate(record).verdict
            except CalibrationError:
                continue
            self._note_verdict(record, verdict)

    def _note_verdict(self, record: CalibrationRecord, verdict: str) -> None:
        """Remember what an instrument's newest approved calibration says of it."""
        if verdict == "fail":
            self._failed[record.instrument.id] = (
                f"calibration {calibration_id(record)} failed on "
                f"{record.calibrated_on.isoformat()}: not fit for use"
            )
        else:
            self._failed.pop(record.instrument.id, None)

    async def watch_expiry(self) -> None:
        """Renew the expiry notes every `EXPIRY_CHECK_S` (a due date passes at midnight)."""
        while True:
            await asyncio.sleep(EXPIRY_CHECK_S)
            if self._opened:
                await self.note_expired()

    async def close(self) -> None:
        """Close the store."""
        if self._opened:
            await self.calibrations.close()

    # --- time ---------------------------------------------------------------------

    def now(self) -> datetime.datetime:
        """The hub's clock as an aware UTC datetime, to the second (as signatures show it)."""
        now = datetime.datetime.fromtimestamp(self._hub.clock(), datetime.UTC)
        return now.replace(microsecond=0)

    def today(self) -> datetime.date:
        """Today, UTC."""
        return self.now().date()

    # --- audit ----------------------------------------------------------------------

    def audit(
        self, who: Principal, action: str, record: CalibrationRecord | None, **details: object
    ) -> None:
        """Log one step in the traffic log."""
        entry: dict[str, object] = {"action": action, **details}
        instrument = None
        if record is not None:
            entry["certificate_number"] = record.certificate_number
            entry["revision"] = record.revision
            entry["content_hash"] = content_hash(record)
            instrument = record.instrument.id
        self._hub.traffic.event(who.name, "calibration", msgspec.json.encode(entry), instrument)

    # --- registries -------------------------------------------------------------------

    async def register_laboratory(self, who: Principal, laboratory: Laboratory) -> None:
        """Set the issuing laboratory."""
        await self.calibrations.save_laboratory(laboratory)
        self.audit(who, "register_laboratory", None, name=laboratory.name)

    async def register_standard(self, who: Principal, standard: ReferenceStandard) -> None:
        """Register or update a reference standard."""
        await self.calibrations.save_standard(standard)
        self.audit(
            who,
            "register_standard",
            None,
            standard=standard.id,
            certificate=standard.certificate_number,
            due=standard.due.isoformat(),
        )

    async def register_instrument(self, who: Principal, instrument: Instrument) -> None:
        """Register or update an instrument; its description, location and interval go to metadata.

        Only the shared facts it gives change the metadata (an empty location
        leaves the one set at the hub); its next due date is taken as given.
        """
        await self.calibrations.save_instrument(instrument)
        await self.metadata.absorb(who, instrument)
        self.audit(who, "register_instrument", None, instrument=instrument.id)
        await self.note_expired()

    async def follow_interval(
        self, who: Principal, instrument_id: str, old_interval_days: int | None
    ) -> None:
        """Move a registered instrument's next due date to follow its changed calibration interval.

        The due date counts from its newest passed calibration; without one,
        from the date the old interval counted from (a due date registered by
        hand). An instrument without an interval keeps the date it has.
        """
        async with self._lock:
            try:
                instrument = await self.calibrations.instrument(instrument_id)
            except NotFound:
                return
            interval = instrument.calibration_interval_days
            if interval is None:
                return
            anchor = await self._last_passed(instrument_id)
            if anchor is None and instrument.next_due and old_interval_days is not None:
                anchor = instrument.next_due - datetime.timedelta(days=old_interval_days)
            if anchor is None:
                return
            due = anchor + datetime.timedelta(days=interval)
            if due == instrument.next_due:
                return
            await self.calibrations.save_instrument(
                msgspec.structs.replace(instrument, next_due=due)
            )
        self.audit(
            who,
            "next_due",
            None,
            instrument=instrument_id,
            old=instrument.next_due.isoformat() if instrument.next_due else None,
            new=due.isoformat(),
            calibration_interval_days=interval,
        )
        await self.note_expired()

    async def _last_passed(self, instrument_id: str) -> datetime.date | None:
        """The date of the instrument's newest approved calibration that passed."""
        for summary in await self.calibrations.records(instrument_id):  # newest first
            if not summary.approved:
                continue
            record = await self.calibrations.record(summary.certificate_number, summary.revision)
            try:
                if evaluate(record).verdict == "pass":
                    return record.calibrated_on
            except CalibrationError:
                continue
        return None

    async def register_procedure(self, who: Principal, text: str, source: str) -> Procedure:
        """Load a procedure from its TOML text; a version, once stored, never changes."""
        procedure = parse_procedure(text, source=source)
        await self.calibrations.save_procedure(procedure)
        self.audit(
            who,
            "register_procedure",
            None,
            procedure=procedure.name,
            version=procedure.version,
        )
        return procedure

    # --- runs -------------------------------------------------------------------------

    async def start(self, who: Principal, request: StartRun) -> RecordView:
        """A new draft record with a new certificate number."""
        instrument = await self.calibrations.instrument(request.instrument)
        if not instrument.description:
            # Nothing set at the hub: the description the agent's file gives, as shown.
            description = self.metadata.view(instrument.id).description
            instrument = msgspec.structs.replace(instrument, description=description)
        procedure = await self.calibrations.procedure(request.procedure, request.version)
        laboratory = await self.calibrations.laboratory()
        if instrument.unit != procedure.unit:
            raise Conflict(
                f"procedure {procedure.name} is in {procedure.unit!r}, "
                f"instrument {instrument.id} reads {instrument.unit!r}"
            )
        today = self.today()
        standards = []
        for standard_id in request.standards:
            try:
                standard = await self.calibrations.standard(standard_id)
            except NotFound:
                raise NotFound(
                    f"no reference standard {standard_id!r} is registered "
                    "(kmz calibration register standard FILE.toml)"
                ) from None
            check_usable(standard, today)  # an expired standard cannot be used
            standards.append(standard)
        async with self._lock:
            number = await self.calibrations.allocate_certificate_number(today.year)
            record = CalibrationRecord(
                certificate_number=number,
                laboratory=laboratory,
                customer=request.customer or Customer(name=f"{laboratory.name} (internal)"),
                instrument=instrument,
                procedure=procedure,
                standards=tuple(standards),
                calibrated_on=today,
                performed_at=request.performed_at,
                item_condition=request.item_condition,
                received_on=request.received_on,
                remarks=request.remarks,
            )
            await self.calibrations.save_draft(record)
        self.audit(
            who,
            "start",
            record,
            procedure=f"{procedure.name}@{procedure.version}",
            standards=list(request.standards),
        )
        return self.view(record)

    async def capture(self, who: Principal, number: str, request: Capture) -> RecordView:
        """The next reading of a point, from the instrument's newest logged samples."""
        async with self._lock:
            record = await self._draft(number)
            nominal, wanted = self._point(record, request.phase, request.index)
            existing = self._existing(record, request.phase, request.index)
            if existing is not None and len(existing.readings) >= wanted:
                raise Conflict(
                    f"point {request.index + 1} ({nominal:g} {record.procedure.unit}) of "
                    f"{request.phase} has its {wanted} readings"
                )
            raw = await recent_samples(
                self._hub.store,
                self._hub.clock,
                record.instrument.id,
                record.instrument.channel,
                record.procedure.stability.flag,
            )
            after = existing.readings[-1].ts if existing and existing.readings else None
            if request.not_before is not None:
                raw = [r for r in raw if r.ts >= request.not_before]
            reading = accept_reading(record, raw, after)
            record = await with_live_environment(self._hub.store, self._hub.clock, record)
            record = self._with_reading(
                record,
                request.phase,
                request.index,
                reading,
                request.reference_value,
                request.standards,
            )
            await self.calibrations.save_draft(record)
        self.audit(
            who,
            "capture",
            record,
            phase=request.phase,
            point=request.index,
            value=reading.value,
            ts=reading.ts,
            samples=len(reading.raw),
        )
        view = self.view(record)
        return msgspec.structs.replace(view, captured=reading)

    async def enter_reading(
        self, who: Principal, number: str, request: ManualReading
    ) -> RecordView:
        """A reading entered by hand (marked so)."""
        if not math.isfinite(request.value):
            raise Conflict("a reading must be a finite number")
        async with self._lock:
            record = await self._draft(number)
            self._point(record, request.phase, request.index)
            reading = Reading(
                value=request.value, ts=self._hub.clock(), manual=True, note=request.note
            )
            record = self._with_reading(
                record,
                request.phase,
                request.index,
                reading,
                request.reference_value,
                request.standards,
            )
            await self.calibrations.save_draft(record)
        self.audit(
            who,
            "enter_reading",
            record,
            phase=request.phase,
            point=request.index,
            value=request.value,
        )
        return self.view(record)

    async def enter_environment(
        self, who: Principal, number: str, request: EnvironmentEntry
    ) -> RecordView:
        """An environmental condition entered by hand."""
        async with self._lock:
            record = await self._draft(number)
            condition = next(
                (c for c in record.procedure.environment if c.name == request.name), None
            )
            if condition is None:
                names = ", ".join(c.name for c in record.procedure.environment) or "none"
                raise NotFound(
                    f"procedure {record.procedure.name} records no condition {request.name!r} "
                    f"(it records: {names})"
                )
            record = set_environment(
                record,
                EnvironmentRecord(
                    name=condition.name,
                    unit=condition.unit,
                    minimum=min(request.minimum, request.maximum),
                    maximum=max(request.minimum, request.maximum),
                    manual=True,
                ),
            )
            await self.calibrations.save_draft(record)
        self.audit(who, "enter_environment", record, condition=request.name)
        return self.view(record)

    async def adjust(self, who: Principal, number: str, text: str) -> RecordView:
        """Describe the adjustment between as-found and as-left."""
        async with self._lock:
            record = set_adjustment(await self._draft(number), text)
            await self.calibrations.save_draft(record)
        self.audit(who, "adjustment", record)
        return self.view(record)

    async def sign(self, who: Principal, number: str, full_name: str) -> RecordView:
        """The performer's signature."""
        async with self._lock:
            record = await self._draft(number)
            missing = [
                c.name
                for c in record.procedure.environment
                if c.name not in {e.name for e in record.environment}
            ]
            if missing:
                raise Conflict("record the environmental conditions first: " + ", ".join(missing))
            record = sign_performed(
                record, user=who.name, full_name=full_name or who.name, at=self.now()
            )
            await self.calibrations.save_draft(record)
        self.audit(who, "sign_performed", record)
        return self.view(record)

    async def reopen(self, who: Principal, number: str) -> RecordView:
        """Withdraw the performer's signature of a draft."""
        async with self._lock:
            record = await self.calibrations.record(number)
            record = reopen(record)
            await self.calibrations.save_draft(record)
        self.audit(who, "reopen", record)
        return self.view(record)

    async def approve(
        self, who: Principal, number: str, full_name: str, *, apply_correction: bool = True
    ) -> RecordView:
        """The approver's signature; the record becomes immutable and its correction applies.

        A record whose final result fails is refused (`CalibrationFailed`)
        unless `apply_correction` is False: ISO/IEC 17025 §7.10 treats the
        instrument as nonconforming, so its correction must not reach the
        stream as calibrated data, yet the failed record itself must be
        kept and signed (it is the evidence the review of affected results
        starts from), not left as a draft that nobody may sign. There is no
        way to apply a failed calibration's correction: a lab that accepts
        a known offset states it in the procedure's tolerance instead.

        Any approval ends the correction in force until then: the newest
        calibration is what the instrument is now, and one approved without
        a correction (failed, or by choice) leaves the data raw.
        """
        async with self._lock:
            # Signed before evaluated: an unsigned draft says so first.
            record = approve(
                await self.calibrations.record(number),
                user=who.name,
                full_name=full_name or who.name,
                at=self.now(),
            )
            evaluation = evaluate(record)
            calibration = calibration_id(record)
            if evaluation.verdict == "fail" and apply_correction:
                failed = ", ".join(
                    f"{p.nominal:g} {record.procedure.unit}"
                    for p in evaluation.final.points
                    if p.verdict == "fail"
                )
                raise CalibrationFailed(
                    f"calibration {calibration} failed ({evaluation.final.phase.replace('_', '-')} "
                    f"out of tolerance at {failed}): the instrument is not fit for use and its "
                    "correction is not applied to the stream. To sign the record as a failed "
                    "calibration (kept, applied to nothing; the correction in force until now "
                    "ends), approve it with apply_correction=false "
                    "(kmz calibration approve --failed)"
                )
            await self.calibrations.save_approved(record)
            now = self._hub.clock()
            correction = None
            if apply_correction:
                correction = correction_from_record(record, valid_from=now, evaluation=evaluation)
                ended = self._hub.corrections.install(correction)
            else:
                current = self._hub.corrections.active.get(record.instrument.id)
                ended = None
                if current is not None:
                    why = (
                        f"calibration {calibration} failed: the instrument is not fit for use"
                        if evaluation.verdict == "fail"
                        else f"superseded by {calibration}, approved without a correction"
                    )
                    ended = self._hub.corrections.withdraw(
                        record.instrument.id, current.calibration, now, why
                    )
            if ended is not None:
                await self.calibrations.save_correction(ended)
            if correction is not None:
                await self.calibrations.save_correction(correction)
            self._note_verdict(record, evaluation.verdict)
            if evaluation.verdict == "pass":
                # A failed calibration does not move the due date on: the
                # instrument needs repair and a new calibration, not a year.
                await self._set_next_due(record)
        await self.note_expired()
        self.audit(
            who,
            "approve",
            record,
            verdict=evaluation.verdict,
            correction=correction.calibration if correction is not None else None,
        )
        _log.info(
            "calibration approved",
            extra={
                "calibration": calibration,
                "instrument": record.instrument.id,
                "verdict": evaluation.verdict,
                "applied": correction is not None,
            },
        )
        return self.view(record)

    async def correct(self, who: Principal, number: str, reason: str) -> RecordView:
        """A new revision of an approved record, as a draft to change and sign again."""
        async with self._lock:
            record = correct(await self.calibrations.record(number), reason=reason)
            await self.calibrations.save_draft(record)
        self.audit(who, "correct", record, reason=reason)
        return self.view(record)

    async def withdraw(self, who: Principal, number: str, reason: str) -> Correction:
        """Stop applying a calibration's correction from now on; the record stays as approved."""
        if not reason.strip():
            raise Conflict("withdrawing a calibration must say why")
        async with self._lock:
            record = await self.calibrations.record(number)
            active = self._hub.corrections.active.get(record.instrument.id)
            if active is None or not active.calibration.startswith(f"{number}/"):
                raise NotFound(f"calibration {number} is not applied to the stream")
            withdrawn = self._hub.corrections.withdraw(
                record.instrument.id, active.calibration, self._hub.clock(), reason
            )
            assert withdrawn is not None  # the active one, under the lock
            await self.calibrations.save_correction(withdrawn)
        self.audit(who, "withdraw", record, correction=active.calibration, reason=reason)
        return withdrawn

    # --- reading ------------------------------------------------------------------------

    async def record(self, number: str, revision: int | None = None) -> RecordView:
        """One revision as a view."""
        return self.view(await self.calibrations.record(number, revision))

    async def records(self, instrument: str | None = None) -> list[RecordSummary]:
        """The latest revision of each calibration."""
        return await self.calibrations.records(instrument)

    async def due(self, within_days: int) -> list[DueEntry]:
        """Instruments due within `within_days`, overdue ones first."""
        today = self.today()
        entries = []
        for instrument in await self.calibrations.due(today, within_days):
            assert instrument.next_due is not None  # the store lists only those with one
            days = (instrument.next_due - today).days
            entries.append(
                DueEntry(
                    instrument=instrument,
                    next_due=instrument.next_due,
                    days_left=days,
                    state="overdue" if days < 0 else "due",
                )
            )
        return entries

    def view(self, record: CalibrationRecord) -> RecordView:
        """A record with its hash, state and figures."""
        points: tuple[object, ...] = ()
        verdict = None
        if record.as_found or record.as_left:
            try:
                evaluation = evaluate(record)
            except CalibrationError:
                evaluation = None
            if evaluation is not None:
                points = summarize(evaluation)
                verdict = evaluation.verdict
        active = self._hub.corrections.active.get(record.instrument.id)
        mine = f"{record.certificate_number}/{record.revision}"
        return RecordView(
            record=record,
            content_hash=content_hash(record),
            approved=is_approved(record),
            points=points,  # type: ignore[arg-type]
            verdict=verdict,
            correction=active if active is not None and active.calibration == mine else None,
        )

    async def pdf(self, number: str, revision: int | None = None) -> bytes:
        """The certificate PDF (a draft is marked as such); rendered in a worker thread."""
        record = await self.calibrations.record(number, revision)
        # The whole record, signatures too: a draft signed again renders anew.
        key = hashlib.sha256(msgspec.json.encode(record)).hexdigest()
        cached = self._pdfs.get(key)
        if cached is not None:
            return cached
        async with self._render_lock:
            if self._renderer is None:
                from ..calibration.certificate import CertificateRenderer

                self._renderer = await asyncio.to_thread(CertificateRenderer)
            renderer = self._renderer
            pdf: bytes = await asyncio.to_thread(renderer.render, record)  # type: ignore[attr-defined]
        self._pdfs[key] = pdf
        while len(self._pdfs) > PDF_CACHE:
            self._pdfs.popitem(last=False)
        return pdf

    # --- helpers ---------------------------------------------------------------------------

    async def _draft(self, number: str) -> CalibrationRecord:
        record = await self.calibrations.record(number)
        if is_approved(record):
            from ..calibration import RecordLocked

            raise RecordLocked(
                f"calibration {number} revision {record.revision} is approved and cannot change; "
                "make a correction (a new revision) instead"
            )
        return record

    @staticmethod
    def _point(record: CalibrationRecord, phase: Phase, index: int) -> tuple[float, int]:
        points = record.procedure.points
        if not 0 <= index < len(points):
            raise NotFound(
                f"procedure {record.procedure.name} has points 0..{len(points) - 1}, not {index}"
            )
        return points[index].nominal, record.procedure.repetitions_at(index)

    @staticmethod
    def _existing(record: CalibrationRecord, phase: Phase, index: int) -> PointResult | None:
        return next((p for p in record.points(phase) if p.index == index), None)

    def _with_reading(
        self,
        record: CalibrationRecord,
        phase: Phase,
        index: int,
        reading: Reading,
        reference_value: float | None,
        standards: tuple[str, ...] | None,
    ) -> CalibrationRecord:
        existing = self._existing(record, phase, index)
        if existing is not None and reference_value is None and standards is None:
            return add_reading(record, phase, index, reading)
        nominal = record.procedure.points[index].nominal
        if standards is None:
            standards = (
                existing.standards
                if existing is not None
                else (tuple(s.id for s in record.standards) if nominal else ())
            )
        if reference_value is None:
            reference_value = existing.reference_value if existing is not None else nominal
        readings = (*existing.readings, reading) if existing is not None else (reading,)
        return add_point(
            record,
            phase,
            PointResult(
                index=index,
                nominal=nominal,
                reference_value=reference_value,
                standards=standards,
                readings=readings,
            ),
        )

    async def _set_next_due(self, record: CalibrationRecord) -> None:
        """An approved calibration moves the instrument's next due date on by its interval."""
        try:
            instrument = await self.calibrations.instrument(record.instrument.id)
        except NotFound:
            return
        if instrument.calibration_interval_days is None:
            return
        due = record.calibrated_on + datetime.timedelta(days=instrument.calibration_interval_days)
        await self.calibrations.save_instrument(msgspec.structs.replace(instrument, next_due=due))
