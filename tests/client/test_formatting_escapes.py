"""What agents and clients chose to call things reaches a terminal as text, never as escapes."""

from __future__ import annotations

import msgspec

from kleinmaelzung.client import LogEntry
from kleinmaelzung.client.formatting import (
    format_gap,
    format_instruments,
    format_log_entry,
    format_result,
    format_sample,
    format_status,
)
from kleinmaelzung.protocol import Channel, Gap, InstrumentRecord, Sample, Status

EVIL = "\x1b[2J\x1b]0;owned\x07\n\x9b31m\u202e"


def assert_safe(line: str) -> None:
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in line), line
    assert "\u202e" not in line


def test_instrument_table_spells_out_escapes_in_kind_unit_and_reason() -> None:
    record = InstrumentRecord(
        id="kiln",
        kind=EVIL,
        agent="pi-1",
        state="faulted",
        reason=EVIL,
        channels=[Channel(name="temp", unit=EVIL)],
    )
    table = format_instruments([record], now=0.0)
    assert_safe(table)
    assert len(table.splitlines()) == 2  # the header and one row: no forged lines
    assert "\\x1b[2J" in table


def test_watch_lines_and_log_lines_spell_out_escapes() -> None:
    sample = Sample(instrument="kiln", seq=0, ts=0.0, values={"temp": 1.0, "note": EVIL})
    lines = [
        format_sample(sample, {"kiln": {"temp": EVIL}}),
        format_status(Status(instrument="kiln", state="faulted", ts=0.0, reason=EVIL)),
        format_gap(Gap(instrument="kiln", run="r", first_seq=0, last_seq=1, count=2, reason=EVIL)),
        format_result({"x": EVIL, EVIL: [EVIL]}),
        format_result(EVIL),
    ]
    for line in lines:
        assert_safe(line)
        assert "\n" not in line
    entry = LogEntry(
        id=1,
        ts=0.0,
        direction="in",
        peer="client-1/" + EVIL,
        instrument=None,
        type="subscribe",
        message=msgspec.Raw(b'{"type": "subscribe", "id": "\\u009b31m\\u202e", "patterns": ["*"]}'),
    )
    line = format_log_entry(entry)
    assert_safe(line)
    assert "\n" not in line
