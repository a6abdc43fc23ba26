"""`kmz log`, `kmz history`, `kmz export` as a user runs them: subprocesses against a real hub."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pandas
import pytest

from kleinmaelzung.hub import HubConfig, RunningHub, start_hub

from .hub.data_lab import NOVEMBER, Clock, fill
from .test_cli import kmz, kmz_async


@pytest.fixture
async def filled(tmp_path: Path) -> AsyncIterator[RunningHub]:
    clock = Clock()
    running = await start_hub(
        HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "hub-data", name="test-hub"),
        clock=clock,
    )
    try:
        await fill(running, clock=clock)
        yield running
    finally:
        await running.stop()


async def test_kmz_log_filters_pages_and_streams(filled: RunningHub) -> None:
    since = "2026-11-01T00:00:45Z"
    args = ("--instrument", "kiln-*", "--kind", "data", "--since", since, "--hub", filled.url)
    first = await kmz_async("log", *args, "--limit", "3", "--json")
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout)
    assert len(page) == 3
    everything = await kmz_async("log", *args, "--all", "--json")
    streamed = [json.loads(line) for line in everything.stdout.splitlines()]
    assert [e["id"] for e in streamed[:3]] == [e["id"] for e in page]
    assert len(streamed) == 8  # 4 frames, one row per instrument each
    oldest = await kmz_async("log", *args, "--oldest", "--limit", "1", "--json")
    assert json.loads(oldest.stdout)[0]["id"] == streamed[-1]["id"]
    human = await kmz_async("log", *args, "--peer", "pi-1", "--text", '"seq":45,')
    lines = human.stdout.splitlines()
    assert len(lines) == 2 and all(" data " in line for line in lines)


async def test_kmz_history_prints_buckets_with_units(filled: RunningHub) -> None:
    result = await kmz_async(
        "history",
        "kiln-air",
        "--since",
        str(NOVEMBER),
        "--until",
        str(NOVEMBER + 120),
        "--every",
        "1m",
        "--channel",
        "temperature",
        "--hub",
        filled.url,
    )
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["time", "temperature", "[°C]"]
    assert len(rows) == 2
    assert "27.375 (20..34.75, n=60)" in rows[0]
    as_json = await kmz_async(
        "history", "kiln-air", "--since", str(NOVEMBER), "--json", "--hub", filled.url
    )
    assert json.loads(as_json.stdout)["instrument"] == "kiln-air"
    # A relative time is a value, not an option: nothing logged in the last minute.
    recent = await kmz_async(
        "history", "kiln-air", "--since", "-1m", "--until", "now", "--hub", filled.url
    )
    assert recent.returncode == 0, recent.stderr
    assert recent.stderr == "no samples of kiln-air in that range\n"


async def test_kmz_export_writes_csv_and_parquet_without_a_bar_when_piped(
    filled: RunningHub, tmp_path: Path
) -> None:
    target = tmp_path / "kilns.csv"
    result = await kmz_async(
        "export",
        "--instrument",
        "kiln-*",
        "--since",
        "2026-11-01",
        "-o",
        str(target),
        "--hub",
        filled.url,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote 240 rows to {target}\n"
    assert result.stderr == ""  # no progress bar in a pipe
    with target.open(encoding="utf-8-sig") as file:
        rows = list(csv.reader(file))
    assert rows[0][:3] == ["time (UTC)", "instrument", "temperature [°C]"]
    assert len(rows) == 241
    parquet = tmp_path / "kilns.parquet"
    result = await kmz_async(
        "export", "--instrument", "kiln-air", "-o", str(parquet), "--hub", filled.url
    )
    assert result.returncode == 0, result.stderr
    assert len(pandas.read_parquet(parquet)) == 120


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("log", "--since", "yesterday"), "--since: expected"),
        (("history", "Kiln"), "not an instrument id"),
        (("history", "kiln-air", "--channel", "Temp"), "not a channel name"),
        (("export", "-o", "out.xlsx"), "--format csv or parquet"),
        (("export", "--instrument", "K*", "-o", "x.csv"), "not an instrument id or pattern"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    result = kmz(*args, "--hub", "http://127.0.0.1:9")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


async def test_kmz_log_dates_its_lines_unless_all_are_of_today(tmp_path: Path) -> None:
    clock = Clock()
    today = datetime.now().replace(hour=12, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    clock.now = yesterday.timestamp()
    running = await start_hub(
        HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "hub-data", name="test-hub"),
        clock=clock,
    )
    try:
        await fill(running, seconds=20, instruments=("kiln-air",))
        clock.now = today.timestamp()
        await fill(running, seconds=20, instruments=("kiln-water",))
        # Today's entries only: the time of day, compact.
        args = ("--hub", running.url)
        todays = await kmz_async("log", "--instrument", "kiln-water", *args)
        assert todays.returncode == 0, todays.stderr
        assert todays.stdout and all(
            re.match(r"12:00:00\.000  [<-]", line) for line in todays.stdout.splitlines()
        ), todays.stdout
        # Entries of two days: every line dated, so the days never look alike.
        both = (await kmz_async("log", "--limit", "50", *args)).stdout.splitlines()
        days = {line[:10] for line in both}
        assert days == {f"{yesterday:%Y-%m-%d}", f"{today:%Y-%m-%d}"}, both
        assert all(re.match(r"\d{4}-\d\d-\d\d 12:00:00\.000  ", line) for line in both)
        # A whole page of another day is dated too: never read as today.
        older = (await kmz_async("log", "--instrument", "kiln-air", *args)).stdout
        assert older.startswith(f"{yesterday:%Y-%m-%d} 12:00:00.000  "), older
        # Streamed: dated unless it starts today.
        since = f"{today:%Y-%m-%d}T00:00"
        streamed = await kmz_async("log", "--all", "--since", since, *args)
        assert streamed.stdout.startswith("12:00:00.000  "), streamed.stdout
        streamed = await kmz_async("log", "--all", "--instrument", "kiln-air", *args)
        assert streamed.stdout.startswith(f"{yesterday:%Y-%m-%d} 12:00:00.000  ")
    finally:
        await running.stop()
