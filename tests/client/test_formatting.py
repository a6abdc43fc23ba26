"""What the CLI shows: pure formatting and argument parsing."""

from __future__ import annotations

import time

import msgspec
import pytest

from kleinmaelzung.client import LogEntry
from kleinmaelzung.client.formatting import (
    ago,
    format_instruments,
    format_log_entry,
    format_result,
    format_sample,
    format_status,
    format_value,
    log_time,
    needs_date,
    parse_assignment,
    sample_json,
    units_of,
)
from kleinmaelzung.protocol import Channel, InstrumentRecord, Sample, Status


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("value=80", ("value", 80)),
        ("value=80.5", ("value", 80.5)),
        ("flag=true", ("flag", True)),
        ("name=kiln", ("name", "kiln")),
        ('name="a b"', ("name", "a b")),
        ("expr=1=2", ("expr", "1=2")),
    ],
)
def test_parse_assignment(text: str, expected: tuple[str, object]) -> None:
    assert parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["value", "=3"])
def test_parse_assignment_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_assignment(text)


def test_values_and_samples() -> None:
    assert format_value(64.5, "°C") == "64.50 °C"
    assert format_value(12.345, "g") == "12.345 g"
    assert format_value(3.0) == "3.00"
    assert format_value(True) == "yes"
    assert format_value(0.0001234) == "0.0001234"
    sample = Sample(instrument="kiln-air", seq=1, ts=0.0, values={"temperature": 64.25})
    line = format_sample(sample, {"kiln-air": {"temperature": "°C"}})
    assert line.endswith("kiln-air  temperature=64.25 °C")
    assert line[:12].count(":") == 2 and line[8] == "."


def test_results() -> None:
    assert format_result(None) == "ok"
    assert format_result({"tare": 12.345}) == "ok  tare=12.345"


def test_instrument_table() -> None:
    records = [
        InstrumentRecord(
            id="kiln-air",
            kind="kiln-controller",
            agent="pi",
            state="faulted",
            reason="no answer",
            last_seen=95.0,
            channels=[Channel(name="temperature", unit="°C")],
        ),
    ]
    table = format_instruments(records, now=100.0)
    header, row = table.splitlines()
    assert header.split()[:3] == ["INSTRUMENT", "KIND", "STATE"]
    assert "faulted (no answer)" in row and "5 s ago" in row and "temperature [°C]" in row
    assert format_instruments([], 0.0).startswith("no instruments")
    assert ago(7200) == "2.0 h ago"


def test_sample_json_is_the_sample_object() -> None:
    sample = Sample(instrument="balance", seq=7, ts=12.5, values={"mass": 1.25, "stable": True})
    assert msgspec.json.decode(sample_json(sample)) == {
        "instrument": "balance",
        "seq": 7,
        "ts": 12.5,
        "values": {"mass": 1.25, "stable": True},
    }


def test_status_line() -> None:
    line = format_status(Status(instrument="balance", state="offline", ts=0.0, reason="gone"))
    assert line.endswith("balance  is offline (gone)")


def test_units_by_instrument_and_channel() -> None:
    record = InstrumentRecord(
        id="balance", kind="balance", agent="pi", state="online", channels=[Channel(name="mass")]
    )
    assert units_of([record]) == {"balance": {"mass": ""}}


def test_log_entry_line_is_compact() -> None:
    entry = LogEntry(
        id=1,
        ts=0.0,
        direction="in",
        peer="pi",
        instrument="balance",
        type="data",
        message={"type": "data", "samples": [{"seq": i} for i in range(50)]},
    )
    line = format_log_entry(entry, width=40)
    assert "<- pi" in line and "balance" in line and " data " in line
    assert line.endswith("…") and '{"type":"data"' in line
    assert "\n" not in line


def test_non_dict_results() -> None:
    assert format_result([1, 2]) == "ok  [1, 2]"
    assert format_result("done") == "ok  done"


def test_log_lines_are_dated_unless_all_of_today() -> None:
    noon = time.mktime((2026, 11, 2, 12, 0, 0, 0, 0, -1))
    day = 86400.0
    assert not needs_date([noon - 3600, noon], now=noon + 60)
    assert needs_date([noon - day, noon], now=noon)  # two days
    assert needs_date([noon - day], now=noon)  # yesterday's only
    assert not needs_date([], now=noon)
    assert log_time(noon + 0.25) == "12:00:00.250"
    assert log_time(noon + 0.25, dated=True) == "2026-11-02 12:00:00.250"
