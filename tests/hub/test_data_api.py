"""Getting data out over HTTP: the log filtered and paged, history, export; and who may ask."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from kleinmaelzung.hub import HubConfig, RunningHub, start_hub
from kleinmaelzung.hub.export import EXPORTS_KEY, MAX_EXPORTS
from kleinmaelzung.protocol import History, LogPage

from .auth_setup import auth_lab
from .data_lab import NOVEMBER, Clock, fill, kiln_values


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


async def get(
    url: str, path: str, token: str | None = None, **params: str
) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(url + path, params=params, headers=headers) as response,
    ):
        return response.status, await response.read(), dict(response.headers)


# --- the log ------------------------------------------------------------------------


async def test_the_log_pages_by_cursor_and_streams_the_same_entries(filled: RunningHub) -> None:
    query = {"instrument": "kiln-*", "kind": "data", "since": str(NOVEMBER + 45)}
    seen: list[int] = []
    cursor = ""
    pages = 0
    while True:
        status, body, _ = await get(filled.url, "/api/log", limit="2", cursor=cursor, **query)
        assert status == 200, body
        page = msgspec.json.decode(body, type=LogPage)
        seen += [e.id for e in page.entries]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    # The frames of seqs 40 to 119 (logged from NOVEMBER + 59.5), one row per
    # instrument each, newest first.
    assert len(seen) == 8 == len(set(seen))
    assert seen == sorted(seen, reverse=True)
    assert pages in (4, 5)
    status, body, headers = await get(filled.url, "/api/log", format="ndjson", **query)
    assert status == 200
    assert headers["Content-Type"].startswith("application/x-ndjson")
    lines = body.decode().splitlines()
    assert [msgspec.json.decode(line)["id"] for line in lines] == seen
    status, body, _ = await get(filled.url, "/api/log", order="oldest", limit="1", **query)
    assert [e.id for e in msgspec.json.decode(body, type=LogPage).entries] == [min(seen)]


async def test_the_log_filters_by_direction_peer_and_text(filled: RunningHub) -> None:
    status, body, _ = await get(filled.url, "/api/log", direction="out", limit="100")
    assert status == 200
    out = msgspec.json.decode(body, type=LogPage).entries
    assert out and {e.direction for e in out} == {"out"}
    assert "ack" in {e.type for e in out}
    status, body, _ = await get(filled.url, "/api/log", peer="pi-1", text='"SEQ":25,')
    entries = msgspec.json.decode(body, type=LogPage).entries
    # The frame's row of each instrument (the hub logs one per instrument).
    assert [(e.type, e.instrument) for e in entries] == [
        ("data", "kiln-water"),
        ("data", "kiln-air"),
    ]
    assert {e.message_object()["samples"][0]["seq"] for e in entries} == {20}
    status, body, _ = await get(filled.url, "/api/log", since="-1h", until="now", limit="1")
    assert status == 200


@pytest.mark.parametrize(
    ("params", "code", "named"),
    [
        ({"since": "yesterday"}, "invalid_arguments", "since"),
        ({"until": "-3 fortnights"}, "invalid_arguments", "until"),
        ({"instrument": "KILN"}, "invalid_instrument_id", "instrument"),
        ({"direction": "sideways"}, "invalid_arguments", "direction"),
        ({"cursor": "abc"}, "invalid_arguments", "cursor"),
        ({"limit": "0"}, "invalid_arguments", "limit"),
        ({"format": "xml"}, "invalid_arguments", "format"),
    ],
)
async def test_bad_log_parameters_are_refused_by_name(
    filled: RunningHub, params: dict[str, str], code: str, named: str
) -> None:
    status, body, _ = await get(filled.url, "/api/log", **params)
    problem = msgspec.json.decode(body)
    assert (status, problem["code"]) == (400, code)
    assert named in problem["message"]


# --- history ------------------------------------------------------------------------


async def test_history_answers_buckets_per_channel_with_units(filled: RunningHub) -> None:
    status, body, _ = await get(
        filled.url,
        "/api/history/kiln-air",
        since=str(NOVEMBER),
        until="2026-11-01T00:02:00Z",
        every="30s",
    )
    assert status == 200, body
    history = msgspec.json.decode(body, type=History)
    assert history.every == 30.0
    assert history.t == [NOVEMBER + 30.0 * i for i in range(4)]
    assert [(c.name, c.unit) for c in history.channels] == [
        ("temperature", "°C"),
        ("humidity", "%"),
    ]
    temperature = history.series["temperature"]
    for i in range(4):
        values = [20.0 + s / 4 for s in range(30 * i, 30 * i + 30)]
        assert temperature.count[i] == 30
        assert (temperature.min[i], temperature.max[i]) == (min(values), max(values))
        assert temperature.mean[i] == pytest.approx(sum(values) / 30)
    assert "heating" not in history.series  # flags are not averaged
    # Without every: `points` buckets over the range; one channel asked for.
    status, body, _ = await get(
        filled.url,
        "/api/history/kiln-air",
        since=str(NOVEMBER),
        until=str(NOVEMBER + 120),
        points="12",
        channel="humidity",
    )
    history = msgspec.json.decode(body, type=History)
    assert (history.every, len(history.t), list(history.series)) == (10.0, 12, ["humidity"])
    assert history.series["humidity"].count == [10] * 12


async def test_history_refuses_what_would_not_fit(filled: RunningHub) -> None:
    status, body, _ = await get(filled.url, "/api/history/kiln-air", since="-30d", every="1s")
    assert status == 400
    assert "every" in msgspec.json.decode(body)["message"]
    status, body, _ = await get(filled.url, "/api/history/Kiln")
    assert (status, msgspec.json.decode(body)["code"]) == (400, "invalid_instrument_id")


# --- export ------------------------------------------------------------------------


async def test_export_streams_a_spreadsheet_ready_csv(filled: RunningHub) -> None:
    status, body, headers = await get(
        filled.url, "/api/export", instrument="kiln-*", since=str(NOVEMBER + 100)
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    assert headers["X-Kmz-Rows-Expected"] == "40"
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0] == ["time (UTC)", "instrument", "temperature [°C]", "humidity [%]", "heating"]
    assert rows[1] == ["2026-11-01 00:01:40.000", "kiln-air", "45.0", "2.0", "true"]
    assert len(rows) == 41
    assert [r[1] for r in rows[1:]] == ["kiln-air"] * 20 + ["kiln-water"] * 20
    status, body, _ = await get(
        filled.url, "/api/export", instrument="kiln-water", format="ndjson", channel="humidity"
    )
    lines = [msgspec.json.decode(line) for line in body.splitlines()]
    assert len(lines) == 120
    assert lines[5] == {
        "instrument": "kiln-water",
        "ts": NOVEMBER + 5,
        "run": "r1",
        "seq": 5,
        "values": kiln_values(5),
    }


async def test_exports_beyond_the_limit_are_refused_until_one_ends(filled: RunningHub) -> None:
    exports = filled.app[EXPORTS_KEY]
    for _ in range(MAX_EXPORTS):  # as if that many were streaming
        await exports.acquire()
    status, body, _ = await get(filled.url, "/api/export", instrument="kiln-air")
    assert (status, msgspec.json.decode(body)["code"]) == (429, "too_many_pending")
    exports.release()
    status, _, _ = await get(filled.url, "/api/export", instrument="kiln-air")
    assert status == 200
    exports.release()


# --- who may ask ---------------------------------------------------------------------


async def test_each_route_asks_the_grant_of_its_instruments(tmp_path: Path) -> None:
    async with auth_lab(tmp_path) as lab:
        # pi-1's token may announce kiln-air and balance.
        await fill(lab.hub, 20, lab.tokens["pi-1"], instruments=("kiln-air", "balance"))
        olga, vic = lab.tokens["olga"], lab.tokens["vic"]  # olga: kiln-* only
        allowed = [
            ("/api/history/kiln-air", {}),
            ("/api/log", {"instrument": "kiln-*"}),
            ("/api/log", {"instrument": "kiln-air", "format": "ndjson"}),
            ("/api/export", {"instrument": "kiln-*"}),
        ]
        for path, params in allowed:
            status, body, _ = await get(lab.url, path, olga, **params)
            assert status == 200, (path, params, body)
        refused = [
            ("/api/history/balance", {}),
            ("/api/log", {"instrument": "*"}),
            ("/api/log", {"instrument": "k*"}),
            ("/api/log", {"peer": "pi-1"}),
            ("/api/export", {}),
            ("/api/export", {"instrument": "balance"}),
        ]
        for path, params in refused:
            status, body, _ = await get(lab.url, path, olga, **params)
            assert (status, msgspec.json.decode(body)["code"]) == (403, "forbidden"), path
        # A viewer of everything exports everything, but the whole log is admin's.
        assert (await get(lab.url, "/api/export", vic))[0] == 200
        assert (await get(lab.url, "/api/log", vic, format="ndjson"))[0] == 403
        assert (await get(lab.url, "/api/history/kiln-air"))[0] == 401


def test_buckets_of_the_test_are_whole() -> None:
    assert math.floor((NOVEMBER + 59.5 - NOVEMBER) / 30) == 1
