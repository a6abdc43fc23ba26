"""Sign-off, immutability and revisions of calibration records.

A record is edited only through these functions while it is a draft. The
performer signs, then an approver signs over the same content: the record's
content hash (SHA-256 of its canonical JSON without the signatures) goes
into each signature, so any later change shows. An approved record refuses
every change; a correction is a new revision that names the old one.
"""

from __future__ import annotations

import datetime
import hashlib
import math

import msgspec

from .errors import RecordLocked, SignatureError
from .model import (
    CalibrationRecord,
    EnvironmentRecord,
    Phase,
    PointResult,
    Reading,
    Revision,
    Signature,
    check_usable,
)

_ENCODER = msgspec.json.Encoder(order="sorted")


def canonical_json(record: CalibrationRecord) -> bytes:
    """The record's content as canonical JSON: sorted keys, no signatures, no whitespace."""
    return _ENCODER.encode(msgspec.structs.replace(record, signatures=()))


def content_hash(record: CalibrationRecord) -> str:
    """SHA-256 of `canonical_json`, hex."""
    return hashlib.sha256(canonical_json(record)).hexdigest()


def is_approved(record: CalibrationRecord) -> bool:
    """True once an approval signature is on the record."""
    return any(s.meaning == "approved" for s in record.signatures)


def _editable(record: CalibrationRecord) -> None:
    if is_approved(record):
        raise RecordLocked(
            f"calibration {record.certificate_number} revision {record.revision} is approved "
            "and cannot change; make a correction (a new revision) instead"
        )
    if record.signatures:
        raise RecordLocked(
            f"calibration {record.certificate_number} is signed as performed; "
            "withdraw the signature (reopen) before changing it"
        )


def add_point(record: CalibrationRecord, phase: Phase, point: PointResult) -> CalibrationRecord:
    """Add or replace the readings of one point in the as-found or as-left phase."""
    _editable(record)
    numbers = [point.nominal, point.reference_value, *(r.value for r in point.readings)]
    if not all(math.isfinite(v) for v in numbers):
        # NaN has no JSON form: it would become null and break the content hash.
        raise ValueError(f"point {point.index}: readings and values must be finite numbers")
    for standard_id in point.standards:
        check_usable(record.standard(standard_id), record.calibrated_on)
    kept = [p for p in record.points(phase) if p.index != point.index]
    points = tuple(sorted([*kept, point], key=lambda p: p.index))
    return msgspec.structs.replace(record, **{phase: points})


def add_reading(
    record: CalibrationRecord, phase: Phase, index: int, reading: Reading
) -> CalibrationRecord:
    """Append one reading to an existing point."""
    _editable(record)
    for point in record.points(phase):
        if point.index == index:
            updated = msgspec.structs.replace(point, readings=(*point.readings, reading))
            return add_point(record, phase, updated)
    raise KeyError(f"no {phase} point {index} in {record.certificate_number}")


def set_environment(record: CalibrationRecord, condition: EnvironmentRecord) -> CalibrationRecord:
    """Record (or replace) one environmental condition."""
    _editable(record)
    kept = tuple(c for c in record.environment if c.name != condition.name)
    return msgspec.structs.replace(record, environment=(*kept, condition))


def set_adjustment(record: CalibrationRecord, adjustment: str) -> CalibrationRecord:
    """Describe the adjustment made between as-found and as-left."""
    _editable(record)
    return msgspec.structs.replace(record, adjustment=adjustment)


def check_standards(record: CalibrationRecord) -> None:
    """Every standard named at a point exists and was within its due date that day."""
    for phase in ("as_found", "as_left"):
        for point in record.points(phase):
            for standard_id in point.standards:
                check_usable(record.standard(standard_id), record.calibrated_on)


def sign_performed(
    record: CalibrationRecord, *, user: str, full_name: str, at: datetime.datetime
) -> CalibrationRecord:
    """The performer's signature: the readings are complete and as taken."""
    _editable(record)
    if not record.as_found and not record.as_left:
        raise SignatureError(f"calibration {record.certificate_number} has no readings to sign")
    check_standards(record)
    signature = Signature(
        user=user,
        full_name=full_name,
        at=_utc(at),
        meaning="performed",
        content_hash=content_hash(record),
    )
    return msgspec.structs.replace(record, signatures=(signature,))


def reopen(record: CalibrationRecord) -> CalibrationRecord:
    """Withdraw the performer's signature of a record not yet approved, to change it."""
    if is_approved(record):
        _editable(record)
    return msgspec.structs.replace(record, signatures=())


def approve(
    record: CalibrationRecord, *, user: str, full_name: str, at: datetime.datetime
) -> CalibrationRecord:
    """The approver's signature; from now on the record is immutable.

    The approver must be someone other than the performer (four eyes), and the
    content must still be what the performer signed.
    """
    performed = [s for s in record.signatures if s.meaning == "performed"]
    if is_approved(record):
        raise RecordLocked(f"calibration {record.certificate_number} is already approved")
    if not performed:
        raise SignatureError(
            f"calibration {record.certificate_number} must be signed as performed first"
        )
    if performed[0].user == user:
        raise SignatureError("the approver must not be the person who performed the calibration")
    digest = content_hash(record)
    if performed[0].content_hash != digest:
        raise SignatureError("the record changed after it was signed as performed")
    at = _utc(at)
    if at < performed[0].at:
        raise SignatureError("approval cannot precede the performer's signature")
    signature = Signature(
        user=user, full_name=full_name, at=at, meaning="approved", content_hash=digest
    )
    return msgspec.structs.replace(record, signatures=(*record.signatures, signature))


def verify(record: CalibrationRecord) -> None:
    """Raise `SignatureError` unless every signature matches the record's content."""
    digest = content_hash(record)
    for signature in record.signatures:
        if signature.content_hash != digest:
            raise SignatureError(
                f"calibration {record.certificate_number}: the {signature.meaning} signature of "
                f"{signature.user} does not match the content (hash {digest[:12]}...)"
            )


def approval(record: CalibrationRecord) -> Signature | None:
    """The approval signature, if any."""
    return next((s for s in record.signatures if s.meaning == "approved"), None)


def performer(record: CalibrationRecord) -> Signature | None:
    """The performer's signature, if any."""
    return next((s for s in record.signatures if s.meaning == "performed"), None)


def correct(record: CalibrationRecord, *, reason: str) -> CalibrationRecord:
    """Start a correction: an unsigned draft, revision + 1, pointing to the approved one."""
    verify(record)
    if not is_approved(record):
        raise SignatureError(
            f"calibration {record.certificate_number} is not approved: change the draft instead"
        )
    if not reason.strip():
        raise SignatureError("a correction must say why it is made")
    return msgspec.structs.replace(
        record,
        revision=record.revision + 1,
        supersedes=Revision(
            certificate_number=record.certificate_number,
            revision=record.revision,
            content_hash=content_hash(record),
            reason=reason,
        ),
        signatures=(),
    )


def _utc(at: datetime.datetime) -> datetime.datetime:
    if at.tzinfo is None:
        raise ValueError("signature times must be timezone-aware")
    return at.astimezone(datetime.UTC)
