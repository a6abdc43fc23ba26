"""`--log-format`: readable lines, or one JSON object per line that a log shipper reads as is."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from kleinmaelzung.logformat import JsonFormatter, TextFormatter

from .e2e.processes import Process, free_port, get_json, wait_until


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"name": "kleinmaelzung.hub", "levelname": "WARNING", "msg": message}
    )
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_a_json_line_holds_the_event_its_fields_and_no_forged_line() -> None:
    line = JsonFormatter().format(record("slow peer", peer="pi-1\nFORGED ERROR", missed=3))
    assert "\n" not in line
    event = json.loads(line)
    assert event["message"] == "slow peer"
    assert event["level"] == "WARNING"
    assert event["logger"] == "kleinmaelzung.hub"
    assert event["peer"] == "pi-1\nFORGED ERROR"  # escaped in the line, intact in the event
    assert event["missed"] == 3
    assert event["ts"].endswith("+00:00")


def test_a_json_line_carries_the_traceback_and_fields_of_any_type() -> None:
    try:
        raise ValueError("bad frame")
    except ValueError:
        import sys

        made = record("handler failed", path=Path("/tmp/x"))
        made.exc_info = sys.exc_info()
    event = json.loads(JsonFormatter().format(made))
    assert "ValueError: bad frame" in event["exception"]
    assert event["path"] == "/tmp/x"


def test_a_text_line_keeps_fields_printable() -> None:
    line = TextFormatter().format(record("slow peer", peer="pi-1\nFORGED"))
    assert "\n" not in line and line.endswith("peer=pi-1\\nFORGED")


def test_kmz_hub_with_json_logs_writes_only_json_lines(tmp_path: Path) -> None:
    port = free_port()
    hub = Process(
        "hub",
        ["--log-format", "json", "hub", "--port", str(port), "--data", str(tmp_path)],
        tmp_path,
    )
    try:
        wait_until(lambda: get_json(f"http://127.0.0.1:{port}/api/health"), "hub health", 15, hub)
    finally:
        assert hub.interrupt() == 0, hub.output()
    events = [json.loads(line) for line in hub.output().splitlines() if line.strip()]
    started = [e for e in events if e["message"] == "hub started"]
    assert started and started[0]["url"] == f"http://127.0.0.1:{port}"
    assert all({"ts", "level", "logger", "message"} <= set(e) for e in events)
