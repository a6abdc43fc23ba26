"""The async client asks the log and histories over its WebSocket (protocol 4), on a real hub
logging to SQLite and to PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kleinmaelzung.client import Client, LogFilter, RequestError, SyncClient, query_log
from kleinmaelzung.hub import HubConfig, RunningHub, start_hub

from ..hub.auth_setup import auth_lab
from ..hub.data_lab import NOVEMBER, Clock, fill
from ..hub.log_backends import LogPlace, log_place, postgres_url

__all__ = ["log_place", "postgres_url"]  # fixtures, used by name


@pytest.fixture
async def filled(tmp_path: Path, log_place: LogPlace) -> AsyncIterator[RunningHub]:
    clock = Clock()
    running = await start_hub(
        HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "hub-data", log_url=log_place.url),
        clock=clock,
    )
    try:
        await fill(running, clock=clock)
        yield running
    finally:
        await running.stop()


async def test_log_and_history_over_the_socket(filled: RunningHub) -> None:
    where = LogFilter(instrument="kiln-water", kind="data", since=NOVEMBER + 45)
    over_http = await query_log(filled.url, where, limit=100)
    async with Client(filled.url, name="notebook") as hub:
        first = await hub.log(where, limit=3)
        rest = await hub.log(where, limit=100, cursor=first.next_cursor)
        oldest = await hub.log(LogFilter(instrument="kiln-water", oldest_first=True), limit=1)
        points = await hub.history("kiln-air", since=NOVEMBER, until=NOVEMBER + 60, every="20s")
        with pytest.raises(RequestError) as refused:
            await hub.log(LogFilter(kind="no such kind"))
    assert len(first.entries) == 3 and first.next_cursor == str(first.entries[-1].id)
    assert rest.next_cursor is None
    assert [e.id for e in first.entries + rest.entries] == [e.id for e in over_http.entries]
    # The hello names no instrument: the first of kiln-water's is its status.
    assert oldest.entries[0].type == "status" and oldest.entries[0].id < first.entries[-1].id
    assert [p.ts for p in points] == [NOVEMBER, NOVEMBER + 20, NOVEMBER + 40]
    assert points[0].count == {"temperature": 20, "humidity": 20}
    assert refused.value.code == "invalid_arguments"


async def test_the_sync_client_reads_the_log_too(filled: RunningHub) -> None:
    def read() -> list[str | None]:
        with SyncClient(filled.url) as hub:
            page = hub.log(LogFilter(instrument="kiln-air", kind="data"), limit=2)
        return [e.instrument for e in page.entries]

    # In a thread: the hub serves on this test's loop.
    assert await asyncio.to_thread(read) == ["kiln-air", "kiln-air"]


async def test_a_grant_holds_over_the_socket(tmp_path: Path) -> None:
    async with auth_lab(tmp_path) as lab:
        await fill(
            lab.hub, seconds=20, token=lab.tokens["pi-1"], instruments=("kiln-air", "balance")
        )
        async with Client(lab.url, token=lab.tokens["olga"]) as olga:
            own = await olga.log(LogFilter(instrument="kiln-air"))
            with pytest.raises(RequestError) as other:
                await olga.log(LogFilter(instrument="balance"))
            with pytest.raises(RequestError) as history:
                await olga.history("balance", since=NOVEMBER)
    assert own.entries and {e.instrument for e in own.entries} == {"kiln-air"}
    assert other.value.code == "forbidden" and history.value.code == "forbidden"
