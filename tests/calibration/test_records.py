"""Sign-off: performer then a different approver; approved records are immutable; corrections."""

from __future__ import annotations

import datetime

import msgspec
import pytest

from kleinmaelzung.calibration import (
    CalibrationRecord,
    EnvironmentRecord,
    RecordLocked,
    SignatureError,
    add_point,
    add_reading,
    approve,
    canonical_json,
    content_hash,
    correct,
    is_approved,
    reopen,
    set_adjustment,
    set_environment,
    sign_performed,
    verify,
)
from kleinmaelzung.calibration.examples import approved_balance_record, balance_record
from kleinmaelzung.calibration.model import Reading

AT = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)


def test_approval_stores_the_content_hash_in_both_signatures() -> None:
    record = approved_balance_record()
    assert is_approved(record)
    performed, approved = record.signatures
    assert (performed.meaning, performed.user) == ("performed", "amaier")
    assert (approved.meaning, approved.user) == ("approved", "jkoch")
    assert performed.content_hash == approved.content_hash == content_hash(record)
    assert len(approved.content_hash) == 64
    verify(record)


def test_the_hash_is_of_canonical_json_and_survives_a_round_trip() -> None:
    record = approved_balance_record()
    text = msgspec.json.encode(record)
    again = msgspec.json.decode(text, type=CalibrationRecord)
    assert content_hash(again) == content_hash(record)
    assert canonical_json(again) == canonical_json(record)
    assert b"signatures" not in canonical_json(record)  # signatures are not content
    verify(again)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: add_point(r, "as_left", r.as_left[0]),
        lambda r: add_reading(r, "as_left", 0, Reading(value=0.0, ts=0.0)),
        lambda r: set_environment(
            r, EnvironmentRecord(name="air temperature", unit="°C", minimum=20, maximum=21)
        ),
        lambda r: set_adjustment(r, "none"),
        lambda r: reopen(r),
        lambda r: approve(r, user="someone", full_name="Some One", at=AT),
    ],
    ids=["add_point", "add_reading", "set_environment", "set_adjustment", "reopen", "approve"],
)
def test_an_approved_record_refuses_every_change(change: object) -> None:
    record = approved_balance_record()
    with pytest.raises(RecordLocked) as caught:
        change(record)  # type: ignore[operator]
    assert caught.value.code == "record_locked"


def test_a_change_made_behind_the_api_is_detected() -> None:
    record = approved_balance_record()
    tampered = msgspec.structs.replace(record, remarks="nothing to see")
    with pytest.raises(SignatureError, match="does not match the content"):
        verify(tampered)
    with pytest.raises(SignatureError):
        correct(tampered, reason="covering tracks")


def test_the_approver_must_be_someone_else_and_come_second() -> None:
    draft = balance_record()
    with pytest.raises(SignatureError, match="signed as performed first"):
        approve(draft, user="jkoch", full_name="Jonas Koch", at=AT)
    signed = sign_performed(draft, user="amaier", full_name="Anna Maier", at=AT)
    with pytest.raises(SignatureError, match="must not be the person"):
        approve(signed, user="amaier", full_name="Anna Maier", at=AT)
    with pytest.raises(SignatureError, match="cannot precede"):
        approve(signed, user="jkoch", full_name="Jonas Koch", at=AT - datetime.timedelta(hours=1))
    with pytest.raises(SignatureError, match="changed after it was signed"):
        approve(
            msgspec.structs.replace(signed, remarks="edited after signing"),
            user="jkoch",
            full_name="Jonas Koch",
            at=AT,
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        sign_performed(draft, user="amaier", full_name="Anna Maier", at=AT.replace(tzinfo=None))


def test_a_signed_draft_is_changed_only_after_reopening() -> None:
    signed = sign_performed(balance_record(), user="amaier", full_name="Anna Maier", at=AT)
    with pytest.raises(RecordLocked, match="reopen"):
        set_adjustment(signed, "different words")
    changed = set_adjustment(reopen(signed), "different words")
    assert changed.signatures == ()


def test_a_record_without_readings_cannot_be_signed() -> None:
    empty = msgspec.structs.replace(balance_record(), as_found=(), as_left=())
    with pytest.raises(SignatureError, match="no readings"):
        sign_performed(empty, user="amaier", full_name="Anna Maier", at=AT)


def test_a_correction_is_a_new_revision_pointing_to_the_old() -> None:
    old = approved_balance_record()
    draft = correct(old, reason="air temperature transcribed wrongly")
    assert draft.revision == 2
    assert draft.supersedes is not None
    assert draft.supersedes.certificate_number == old.certificate_number
    assert draft.supersedes.revision == 1
    assert draft.supersedes.content_hash == content_hash(old)
    assert draft.supersedes.reason == "air temperature transcribed wrongly"
    assert draft.signatures == ()
    fixed = set_environment(
        draft,
        EnvironmentRecord(name="air temperature", unit="°C", minimum=21.3, maximum=21.9),
    )
    fixed = sign_performed(fixed, user="amaier", full_name="Anna Maier", at=AT)
    fixed = approve(fixed, user="jkoch", full_name="Jonas Koch", at=AT)
    assert content_hash(fixed) != content_hash(old)
    verify(old)  # the old revision is untouched
    verify(fixed)
    with pytest.raises(SignatureError, match="must say why"):
        correct(fixed, reason=" ")
    with pytest.raises(SignatureError, match="not approved"):
        correct(balance_record(), reason="draft")


def test_fields_at_their_defaults_are_not_hashed() -> None:
    """A field added later with a default must not change the hash of older records."""
    record = approved_balance_record()
    assert record.procedure.resolution_terms == 1
    text = canonical_json(record)
    assert b"resolution_terms" not in text
    assert b"resolution_full_step" not in text
    verify(msgspec.json.decode(text, type=type(record)))
