"""What the CLI shows: pure formatting and argument parsing."""

from __future__ import annotations

import pytest

from kleinmaelzung.client.formatting import (
    ago,
    format_instruments,
    format_result,
    format_sample,
    format_value,
    parse_assignment,
)
from kleinmaelzung.protocol import Channel, InstrumentRecord, Sample


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
    assert format_value(64.5, "°C") == "64.5 °C"
    assert format_value(True) == "yes"
    assert format_value(0.0001234) == "0.0001234"
    sample = Sample(instrument="kiln-air", seq=1, ts=0.0, values={"temperature": 64.25})
    line = format_sample(sample, {"kiln-air": {"temperature": "°C"}})
    assert line.endswith("kiln-air  temperature=64.25 °C")


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
