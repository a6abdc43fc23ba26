"""What the hub applies survives its restart: corrections in force, expiry notes."""

from __future__ import annotations

import datetime
from pathlib import Path

import msgspec

from kleinmaelzung.calibration import correction_from_record
from kleinmaelzung.calibration.examples import approved_balance_record
from kleinmaelzung.hub import HubConfig, start_hub
from kleinmaelzung.hub.calibrations import SqliteCalibrationStore
from kleinmaelzung.hub.registry import NOT_SEEN_SINCE_START
from kleinmaelzung.protocol import InstrumentInfo


async def test_a_restarted_hub_applies_the_corrections_in_force_and_notes_expiry(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    store = SqliteCalibrationStore(data / "calibrations.sqlite3")
    await store.open()
    record = approved_balance_record()
    await store.save_approved(record)
    applied = correction_from_record(record, valid_from=1000.0)
    withdrawn = msgspec.structs.replace(
        correction_from_record(approved_balance_record("KMZ-2026-0041"), valid_from=500.0),
        instrument_id="steep-water",
        withdrawn_at=600.0,
        withdrawn_reason="moved",
    )
    await store.save_correction(withdrawn)
    await store.save_correction(applied)
    yesterday = datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=1)
    await store.save_instrument(msgspec.structs.replace(record.instrument, next_due=yesterday))
    await store.close()

    running = await start_hub(HubConfig(host="127.0.0.1", port=0, data_dir=data))
    try:
        assert running.hub.corrections.active == {"balance": applied}
        registry = running.hub.registry
        registry.remember(InstrumentInfo(id="balance", kind="balance"), "pi", None)
        (listed,) = registry.records()
        assert listed.reason == (
            f"{NOT_SEEN_SINCE_START}; calibration expired on {yesterday.isoformat()}"
        )
    finally:
        await running.stop()
