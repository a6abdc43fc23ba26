"""The hub's calibration store on a real SQLite file: records, revisions, registries."""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from kleinmaelzung.calibration import (
    RecordLocked,
    SignatureError,
    approve,
    content_hash,
    correct,
    set_adjustment,
    sign_performed,
)
from kleinmaelzung.calibration.examples import (
    approved_balance_record,
    balance_record,
    balance_standards,
)
from kleinmaelzung.hub.calibrations import Conflict, NotFound, SqliteCalibrationStore

AT = datetime.datetime(2026, 11, 25, 9, 0, tzinfo=datetime.UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteCalibrationStore]:
    store = SqliteCalibrationStore(tmp_path / "calibrations.sqlite3")
    await store.open()
    yield store
    await store.close()


async def test_a_draft_is_replaced_until_approved_then_refused(
    store: SqliteCalibrationStore,
) -> None:
    draft = balance_record()
    await store.save_draft(draft)
    changed = set_adjustment(draft, "none")
    await store.save_draft(changed)
    assert (await store.record(draft.certificate_number)).adjustment == "none"

    approved = approved_balance_record()
    await store.save_approved(approved)
    await store.save_approved(approved)  # the same again: a no-op
    assert await store.record(approved.certificate_number) == approved
    with pytest.raises(RecordLocked):
        await store.save_draft(balance_record())
    other = sign_performed(balance_record(), user="amaier", full_name="Anna Maier", at=AT)
    other = approve(other, user="xy", full_name="X Y", at=AT + datetime.timedelta(hours=1))
    with pytest.raises(RecordLocked):
        await store.save_approved(other)  # another approval of the same revision


async def test_the_database_itself_refuses_to_change_an_approved_row(
    store: SqliteCalibrationStore,
) -> None:
    await store.save_approved(approved_balance_record())
    with sqlite3.connect(store.path) as raw:
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            raw.execute("UPDATE calibration_records SET record = '{}'")
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            raw.execute("DELETE FROM calibration_records")


async def test_a_tampered_or_unapproved_record_is_not_stored_as_approved(
    store: SqliteCalibrationStore,
) -> None:
    with pytest.raises(Conflict):
        await store.save_approved(balance_record())
    tampered = msgspec.structs.replace(approved_balance_record(), remarks="edited")
    with pytest.raises(SignatureError):
        await store.save_approved(tampered)
    with pytest.raises(Conflict):
        await store.save_draft(approved_balance_record())


async def test_corrections_chain_revisions(store: SqliteCalibrationStore) -> None:
    old = approved_balance_record()
    await store.save_approved(old)
    draft = correct(old, reason="wrong adjustment text")
    draft = set_adjustment(draft, "Span adjusted with the internal weight.")
    await store.save_draft(draft)
    fixed = approve(
        sign_performed(draft, user="amaier", full_name="Anna Maier", at=AT),
        user="jkoch",
        full_name="Jonas Koch",
        at=AT,
    )
    await store.save_approved(fixed)
    summaries = await store.revisions(old.certificate_number)
    assert [(s.revision, s.approved) for s in summaries] == [(1, True), (2, True)]
    assert summaries[0].content_hash == content_hash(old)
    assert (await store.record(old.certificate_number)).revision == 2
    assert await store.record(old.certificate_number, 1) == old
    listed = await store.records("balance")
    assert [(s.certificate_number, s.revision) for s in listed] == [(old.certificate_number, 2)]


async def test_a_revision_must_correct_the_stored_approved_one(
    store: SqliteCalibrationStore,
) -> None:
    old = approved_balance_record()
    draft = correct(old, reason="x")
    with pytest.raises(Conflict, match="must correct the approved revision"):
        await store.save_draft(draft)  # revision 1 was never stored
    with pytest.raises(Conflict, match="must name the revision"):
        await store.save_draft(msgspec.structs.replace(balance_record(), revision=3))


async def test_missing_things_are_not_found(store: SqliteCalibrationStore) -> None:
    with pytest.raises(NotFound):
        await store.record("KMZ-0000")
    with pytest.raises(NotFound):
        await store.procedure("nothing")
    with pytest.raises(NotFound):
        await store.standard("nothing")
    with pytest.raises(NotFound):
        await store.instrument("nothing")


async def test_procedure_versions_are_immutable(store: SqliteCalibrationStore) -> None:
    procedure = balance_record().procedure
    await store.save_procedure(procedure)
    await store.save_procedure(procedure)  # identical: fine
    changed = msgspec.structs.replace(procedure, repetitions=5)
    with pytest.raises(Conflict, match="new version"):
        await store.save_procedure(changed)
    await store.save_procedure(msgspec.structs.replace(changed, version=3))
    assert (await store.procedure(procedure.name)).version == 3
    assert await store.procedure(procedure.name, 2) == procedure


async def test_registries_and_due_dates(store: SqliteCalibrationStore) -> None:
    (weights,) = balance_standards()
    await store.save_standard(weights)
    assert await store.standard(weights.id) == weights
    instrument = balance_record().instrument  # next due 2027-11-24
    other = msgspec.structs.replace(
        instrument, id="thermometer", next_due=datetime.date(2026, 12, 1)
    )
    undated = msgspec.structs.replace(instrument, id="hygrometer", next_due=None)
    for item in (instrument, other, undated):
        await store.save_instrument(item)
    today = datetime.date(2026, 11, 26)
    assert [i.id for i in await store.due(today)] == []
    assert [i.id for i in await store.due(today, within_days=30)] == ["thermometer"]
    assert [i.id for i in await store.due(datetime.date(2028, 1, 1))] == [
        "thermometer",
        "balance",
    ]
    assert await store.instrument("balance") == instrument


async def test_certificate_numbers_are_unique_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "numbers.sqlite3"
    first = SqliteCalibrationStore(path)
    await first.open()
    numbers = [await first.allocate_certificate_number(2026) for _ in range(3)]
    await first.close()
    second = SqliteCalibrationStore(path)
    await second.open()
    numbers.append(await second.allocate_certificate_number(2026))
    numbers.append(await second.allocate_certificate_number(2027))
    await second.close()
    assert numbers == [
        "KMZ-2026-0001",
        "KMZ-2026-0002",
        "KMZ-2026-0003",
        "KMZ-2026-0004",
        "KMZ-2027-0001",
    ]
