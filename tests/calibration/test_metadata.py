"""Instrument metadata held at the hub feeds the calibration records (issue 17, item 5).

The calibration registry keeps the certificate's facts; description,
location and the calibration interval are the metadata's, kept once: a
changed interval moves the due date, a new record carries the location set
at the hub, and what the registry file gave moves into the metadata.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import msgspec
import pytest

from kleinmaelzung.client import (
    Client,
    InstrumentMetadata,
    get_instrument_metadata,
    set_instrument_metadata,
)
from kleinmaelzung.hub.calibrations import SqliteCalibrationStore

from ..hub.auth_setup import Lab
from .test_failed_calibration import signed_run
from .test_hub_api import BALANCE, TODAY, Balance, api, code_of, lab, register

__all__ = ["lab"]  # the fixture, used by name


@pytest.mark.slow
async def test_the_due_date_follows_a_changed_interval_and_records_take_the_location(
    lab: tuple[Lab, Balance],
) -> None:
    hub, _ = lab
    await register(hub)
    admin, viewer = api(hub, "ada"), api(hub, "vic")
    # What the registry file gave is the metadata's now, not the registry's.
    held = await get_instrument_metadata(hub.url, "balance", token=hub.tokens["ada"])
    assert held.metadata.description == "Precision balance"
    assert held.metadata.calibration_interval_days == 365
    await admin.approve(await signed_run(hub, 0.001), "Ada Admin")
    assert (await viewer.due(days=400))[0].next_due == TODAY + datetime.timedelta(days=365)

    changed = msgspec.structs.replace(
        held.metadata, calibration_interval_days=180, location="Malting room, bench 2"
    )
    await set_instrument_metadata(hub.url, "balance", changed, token=hub.tokens["ada"])

    [due] = await viewer.due(days=400)
    assert due.next_due == TODAY + datetime.timedelta(days=180)
    assert due.instrument.calibration_interval_days == 180
    assert due.instrument.location == "Malting room, bench 2"
    # The next record's instrument is described as the hub holds it.
    record = (
        await api(hub, "oscar").start("balance", "balance-quick", standards=("W-SET-1",))
    ).record
    assert record.instrument.location == "Malting room, bench 2"
    assert record.instrument.description == "Precision balance"
    # Listed to clients too, with the description shown.
    async with Client(hub.url, token=hub.tokens["vic"]) as client:
        [listed] = [r for r in await client.instruments() if r.id == "balance"]
    assert listed.metadata and listed.metadata.location == "Malting room, bench 2"
    assert listed.description == "Precision balance"
    # Registering the instrument again without a location leaves the hub's.
    await admin.register_instrument(
        msgspec.structs.replace(BALANCE, calibration_interval_days=None)
    )
    held = await get_instrument_metadata(hub.url, "balance", token=hub.tokens["ada"])
    assert held.metadata.location == "Malting room, bench 2"
    assert held.metadata.calibration_interval_days == 180


async def test_an_operator_or_viewer_cannot_change_metadata(lab: tuple[Lab, Balance]) -> None:
    hub, _ = lab
    for user in ("oscar", "vic"):
        code, message = await code_of(
            set_instrument_metadata(
                hub.url, "balance", InstrumentMetadata(location="x"), token=hub.tokens[user]
            )
        )
        assert code == "forbidden" and "admin" in message
    held = await get_instrument_metadata(hub.url, "balance", token=hub.tokens["ada"])
    assert held.metadata == InstrumentMetadata() and held.updated_by is None


async def test_a_registry_written_before_metadata_moves_its_shared_facts(tmp_path: Path) -> None:
    """A calibration file of an older hub kept description, location and interval in the row."""
    path = tmp_path / "calibrations.sqlite3"
    old = msgspec.structs.replace(BALANCE, location="Lab 1")
    store = SqliteCalibrationStore(path)
    await store.open()
    # As an older hub wrote it: the whole instrument in the row.
    await store._run(
        lambda c: c.execute(
            "INSERT INTO calibration_instruments (id, next_due, instrument) VALUES (?, ?, ?)",
            (old.id, None, msgspec.json.encode(old)),
        )
    )
    await store.close()

    store = SqliteCalibrationStore(path)
    await store.open()
    try:
        [held] = await store.metadata()
        row = await store._run(
            lambda c: c.execute("SELECT instrument FROM calibration_instruments").fetchone()
        )
        instrument = await store.instrument("balance")
    finally:
        await store.close()
    assert held.metadata == InstrumentMetadata(
        description="Precision balance", location="Lab 1", calibration_interval_days=365
    )
    stored = msgspec.json.decode(row[0])
    assert stored["description"] == "" and "location" not in stored
    assert "calibration_interval_days" not in stored
    assert instrument == old
