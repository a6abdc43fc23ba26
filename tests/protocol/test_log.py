"""The traffic-log entry on the wire: one shape for hub and clients, always valid JSON."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kleinmaelzung.protocol import (
    REFUSED,
    REFUSED_FRAME_BYTES,
    Data,
    Error,
    ErrorCode,
    ErrorInfo,
    Invalid,
    LogEntry,
    LogPage,
    RefusedInput,
    client_decoder,
    refused_entry_message,
)

DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")

DATA_ENTRY = (
    b'{"id":7,"ts":1795557249.49,"direction":"in","peer":"pi-1","instrument":"balance",'
    b'"type":"data","message":{"type":"data","samples":[{"instrument":"balance","seq":3,'
    b'"ts":1795557249.4,"values":{"mass":12.5}}]},"delivered_to":"client-1/watch"}'
)


def entry(message: bytes, type_: str = REFUSED) -> LogEntry:
    return LogEntry(
        id=1,
        ts=10.0,
        direction="in",
        peer="client-1/typist",
        instrument=None,
        type=type_,
        message=msgspec.Raw(message),
    )


def test_an_entry_decodes_and_encodes_back_to_the_same_json() -> None:
    decoded = msgspec.json.decode(DATA_ENTRY, type=LogEntry)
    assert (decoded.id, decoded.direction, decoded.delivered_to) == (7, "in", "client-1/watch")
    assert msgspec.json.encode(decoded) == DATA_ENTRY
    message = decoded.decode_message()
    assert isinstance(message, Data) and message.samples[0].values == {"mass": 12.5}
    assert decoded.message_object()["samples"][0]["seq"] == 3
    assert decoded.refusal() is None
    assert '"values":{"mass":12.5}' in repr(decoded)  # the JSON, not an address


def test_a_page_holds_entries_of_types_the_reader_does_not_know() -> None:
    newer = (
        b'{"id":8,"ts":1.5,"direction":"out","peer":"pi-1","instrument":null,'
        b'"type":"from_a_newer_hub","message":{"anything":[1,"two"]},"delivered_to":null}'
    )
    page = msgspec.json.decode(b'{"entries":[' + newer + b"," + DATA_ENTRY + b"]}", type=LogPage)
    assert [e.type for e in page.entries] == ["from_a_newer_hub", "data"]
    assert page.entries[0].message_object() == {"anything": [1, "two"]}


def test_a_refused_frame_becomes_an_object_saying_why_and_what() -> None:
    frame = b'{"type":"command","id":"c1","instrument":"kiln-air","name":"set-setpoint"}'
    result = client_decoder().decode(frame)
    assert isinstance(result, Invalid)
    logged = entry(refused_entry_message(result.error, frame))
    refusal = logged.refusal()
    assert refusal == RefusedInput(
        error=ErrorInfo(code=ErrorCode.INVALID_MESSAGE, message=result.error.message),
        frame=frame.decode(),
        frame_bytes=len(frame),
    )
    assert logged.message_object()["error"]["code"] == "invalid_message"
    assert isinstance(logged.decode_message(), Invalid)  # not a protocol message


def test_a_long_frame_is_cut_without_breaking_a_character() -> None:
    frame = "x" * (REFUSED_FRAME_BYTES - 1) + "€" * 10  # the cut falls inside a €
    error = Error(code=ErrorCode.MESSAGE_TOO_LARGE, message="too large")
    refusal = entry(refused_entry_message(error, frame)).refusal()
    assert refusal is not None
    assert refusal.frame == "x" * (REFUSED_FRAME_BYTES - 1) + "\ufffd"
    assert refusal.frame_bytes == len(frame.encode())


@given(
    st.binary(max_size=2 * REFUSED_FRAME_BYTES)
    | st.text(st.characters(exclude_categories=()), max_size=REFUSED_FRAME_BYTES)
)
def test_any_refused_input_is_logged_as_valid_json(frame: bytes | str) -> None:
    error = Error(code=ErrorCode.INVALID_JSON, message="not valid JSON")
    refusal = msgspec.json.decode(refused_entry_message(error, frame), type=RefusedInput)
    data = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
    assert refusal.frame_bytes == len(data)
    kept = data[:REFUSED_FRAME_BYTES]
    assert refusal.frame == kept.decode("utf-8", "replace")


def test_refused_input_logged_by_an_older_hub_still_reads() -> None:
    old = entry(b'"{not json"', type_="error")
    assert old.message_object() == {"frame": "{not json"}
    assert old.refusal() is None


def log_section() -> str:
    match = re.search(r"^### The traffic log\n(.*?)(?=^##)", DOC + "\n## end", re.S | re.M)
    assert match, "docs/protocol.md has no '### The traffic log' section"
    return match[1]


@pytest.mark.parametrize("struct", [LogEntry, RefusedInput], ids=lambda s: s.__name__)
def test_every_field_is_documented(struct: type[msgspec.Struct]) -> None:
    text = log_section()
    missing = [f.name for f in msgspec.structs.fields(struct) if f"| `{f.name}` |" not in text]
    assert not missing, f"{struct.__name__}: fields not documented: {missing}"


def test_the_documented_refused_entry_decodes() -> None:
    (example,) = re.findall(r"```json\n(.*?)\n```", log_section(), re.S)
    documented = msgspec.json.decode(example.encode(), type=LogEntry)
    refusal = documented.refusal()
    assert refusal is not None and refusal.error.code == "invalid_message"
    assert refusal.frame_bytes == len(refusal.frame.encode())
