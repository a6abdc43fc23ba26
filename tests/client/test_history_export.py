"""The Python client gets data out: history as points or a DataFrame, the log, exports to files."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pandas
import pytest

from kleinmaelzung.client import (
    Client,
    LogFilter,
    MissingExtra,
    RequestError,
    SyncClient,
    export,
    query_log,
    stream_log,
)
from kleinmaelzung.hub import HubConfig, RunningHub, start_hub

from ..hub.data_lab import NOVEMBER, Clock, fill, kiln_values


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


async def test_history_as_points_and_as_a_frame(filled: RunningHub) -> None:
    async with Client(filled.url) as hub:
        points = await hub.history("kiln-air", since=NOVEMBER, until=NOVEMBER + 60, every="20s")
        frame = await hub.history(
            "kiln-air", since=NOVEMBER, until=NOVEMBER + 60, every=20, as_frame=True
        )
    assert [p.ts for p in points] == [NOVEMBER, NOVEMBER + 20, NOVEMBER + 40]
    first = points[0]
    temperatures = [20.0 + s / 4 for s in range(20)]
    assert first.values["temperature"] == pytest.approx(sum(temperatures) / 20)
    assert (first.minimum["temperature"], first.maximum["temperature"]) == (20.0, 24.75)
    assert first.count == {"temperature": 20, "humidity": 20}
    assert list(frame.columns) == ["temperature", "humidity"]
    assert frame.index.name == "time"
    assert frame.index[1] == pandas.Timestamp("2026-11-01 00:00:20", tz="UTC")
    assert frame["temperature"].iloc[0] == pytest.approx(first.values["temperature"])


async def test_the_sync_client_gets_history_too(filled: RunningHub) -> None:
    def read() -> list[int]:
        with SyncClient(filled.url) as hub:
            points = hub.history("kiln-water", since=NOVEMBER, until=NOVEMBER + 120, points=4)
        assert isinstance(points, list)
        return [sum(p.count.values()) for p in points]

    # In a thread: the hub serves on this test's loop.
    assert await asyncio.to_thread(read) == [60] * 4


async def test_history_as_a_frame_without_pandas_names_the_extra(
    filled: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    async with Client(filled.url) as hub:
        with pytest.raises(MissingExtra, match=r"kleinmaelzung\[data\]"):
            await hub.history("kiln-air", as_frame=True)


async def test_an_unknown_channel_or_a_bad_time_is_an_error_with_a_code(
    filled: RunningHub,
) -> None:
    async with Client(filled.url) as hub:
        with pytest.raises(RequestError) as caught:
            await hub.history("kiln-air", channels=["Temperature"])
        assert caught.value.code == "invalid_arguments"
        with pytest.raises(ValueError, match="ISO 8601"):
            await hub.history("kiln-air", since="last tuesday")


async def test_the_log_pages_and_streams_from_python(filled: RunningHub) -> None:
    where = LogFilter(instrument="kiln-water", kind="data", since=NOVEMBER + 45)
    page = await query_log(filled.url, where, limit=3)
    assert len(page.entries) == 3 and page.next_cursor is not None
    rest = await query_log(filled.url, where, limit=3, cursor=page.next_cursor)
    streamed = [e.id async for e in stream_log(filled.url, where)]
    assert streamed == [e.id for e in page.entries + rest.entries]
    assert len(streamed) == 4


async def test_csv_and_parquet_exports_read_back_equal(filled: RunningHub, tmp_path: Path) -> None:
    progress: list[tuple[int, int | None]] = []
    csv_file = await export(
        filled.url,
        tmp_path / "kilns.csv",
        instrument="kiln-*",
        since="2026-11-01T00:01:00+00:00",
        on_progress=lambda done, total: progress.append((done, total)),
    )
    parquet_file = await export(
        filled.url,
        tmp_path / "kilns.parquet",
        instrument="kiln-*",
        since=NOVEMBER + 60,
        format="parquet",
    )
    assert csv_file.rows == parquet_file.rows == 120
    assert progress[-1] == (120, 120)
    from_csv = pandas.read_csv(csv_file.path)
    from_parquet = pandas.read_parquet(parquet_file.path)
    assert list(from_csv.columns) == [
        "time (UTC)",
        "instrument",
        "temperature [°C]",
        "humidity [%]",
        "heating",
    ]
    assert list(from_parquet.columns) == list(from_csv.columns)
    from_csv["time (UTC)"] = pandas.to_datetime(from_csv["time (UTC)"]).dt.tz_localize("UTC")
    from_parquet["time (UTC)"] = from_parquet["time (UTC)"].dt.as_unit("ns")
    pandas.testing.assert_frame_equal(from_csv, from_parquet, check_dtype=False)
    assert from_csv.iloc[0].to_dict() == {
        "time (UTC)": pandas.Timestamp("2026-11-01 00:01:00", tz="UTC"),
        "instrument": "kiln-air",
        "temperature [°C]": kiln_values(60)["temperature"],
        "humidity [%]": kiln_values(60)["humidity"],
        "heating": True,
    }
    assert not (tmp_path / "kilns.csv.partial").exists()


async def test_a_refused_export_leaves_no_file(filled: RunningHub, tmp_path: Path) -> None:
    with pytest.raises(RequestError) as caught:
        await export(filled.url, tmp_path / "x.csv", instrument="Kiln")
    assert caught.value.code == "invalid_instrument_id"
    assert not (tmp_path / "x.csv").exists()
    assert not (tmp_path / "x.csv.partial").exists()
