"""The log and histories over the client WebSocket (protocol 4): the same answers as HTTP,
the same grants, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from kleinmaelzung.hub import HubConfig, RunningHub, start_hub
from kleinmaelzung.protocol import History, Limits

from .auth_setup import auth_lab, client_hello, greeted
from .data_lab import NOVEMBER, Clock, fill
from .log_backends import LogPlace, log_place, postgres_url
from .peers import RawPeer, raw_client, raw_peer

__all__ = ["log_place", "postgres_url"]  # fixtures, used by name


@pytest.fixture
async def filled(tmp_path: Path, log_place: LogPlace) -> AsyncIterator[RunningHub]:
    clock = Clock()
    running = await start_hub(
        HubConfig(
            host="127.0.0.1",
            port=0,
            data_dir=tmp_path / "hub-data",
            name="test-hub",
            log_url=log_place.url,
        ),
        clock=clock,
    )
    try:
        await fill(running, clock=clock)
        yield running
    finally:
        await running.stop()


async def rest(url: str, path: str, token: str | None = None, **params: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(url + path, params=params, headers=headers) as response,
    ):
        return response.status, msgspec.json.decode(await response.read())


async def ask_log(socket: RawPeer, request_id: str, **filters: Any) -> list[dict[str, Any]]:
    """Every `log_result` (or the `error`) answering one `log_query`, in order."""
    await socket.send({"type": "log_query", "id": request_id, **filters})
    results: list[dict[str, Any]] = []
    while True:
        answer = await socket.receive()
        if answer.get("id") != request_id:
            continue
        results.append(answer)
        if answer["type"] == "error" or answer["done"]:
            return results


FILTERS: list[dict[str, Any]] = [
    {"instrument": "kiln-*", "kind": "data", "since": NOVEMBER + 45},
    {"instrument": "kiln-water", "order": "oldest"},
    {"peer": "pi-*", "direction": "in", "until": NOVEMBER + 60},
    {"text": "agent_hello"},
    {"kind": "command"},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f))
async def test_each_filter_and_the_cursor_answer_as_http_does(
    filled: RunningHub, filters: dict[str, Any]
) -> None:
    params = {k: str(v) for k, v in filters.items()}
    status, body = await rest(filled.url, "/api/log", limit="10000", **params)
    assert status == 200, body
    expected = [e["id"] for e in body["entries"]]
    seen: list[int] = []
    cursor: str | None = None
    async with raw_client(filled.url) as peer:
        for page in range(100):
            more = {"cursor": cursor} if cursor else {}
            (result,) = await ask_log(peer, f"q{page}", limit=3, **filters, **more)
            assert result["type"] == "log_result", result
            seen += [e["id"] for e in result["entries"]]
            cursor = result["next_cursor"]
            if cursor is None:
                break
    assert seen == expected
    assert len(expected) == len(set(expected))


async def test_a_long_answer_comes_in_frames_within_the_limit(tmp_path: Path) -> None:
    limits = Limits(max_message_bytes=16 << 10)
    running = await start_hub(
        HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "d", limits=limits)
    )
    try:
        await fill(running)
        async with raw_peer(running.url, "/ws/client") as peer:
            await peer.send(client_hello(None))
            assert (await peer.receive())["protocol"] == 4
            frames: list[int] = []
            await peer.send({"type": "log_query", "id": "all", "instrument": "kiln-air"})
            results: list[dict[str, Any]] = []
            while not (results and results[-1]["done"]):
                msg = await peer.ws.receive(timeout=5)
                frames.append(len(msg.data))
                results.append(msgspec.json.decode(msg.data))
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                running.url + "/api/log", params={"instrument": "kiln-air", "format": "ndjson"}
            ) as response,
        ):
            streamed = [msgspec.json.decode(line) for line in (await response.read()).splitlines()]
    finally:
        await running.stop()
    assert len(results) > 1 and all(r["id"] == "all" for r in results)
    assert max(frames) <= limits.max_message_bytes
    ids = [e["id"] for r in results for e in r["entries"]]
    assert ids == [e["id"] for e in streamed if e["type"] != "log_query"]
    # Each intermediate result says where it ended: a client can resume from any.
    assert [r["next_cursor"] for r in results[:-1]] == [
        str(r["entries"][-1]["id"]) for r in results[:-1]
    ]


async def test_history_over_the_socket_is_the_http_answer(filled: RunningHub) -> None:
    query = {"since": NOVEMBER, "until": NOVEMBER + 120, "every": 20.0}
    status, body = await rest(
        filled.url, "/api/history/kiln-air", **{k: str(v) for k, v in query.items()}
    )
    assert status == 200
    async with raw_client(filled.url) as peer:
        await peer.send({"type": "history_query", "id": "h", "instrument": "kiln-air", **query})
        answer = await peer.receive_type("history_result")
        await peer.send(
            {"type": "history_query", "id": "bad", "instrument": "kiln-air", "channels": ["Tx"]}
        )
        refused = await peer.receive_type("error")
    assert answer["id"] == "h"
    assert msgspec.convert(answer["history"], History) == msgspec.convert(body, History)
    assert answer["history"]["t"] == [NOVEMBER + 20 * i for i in range(6)]
    assert (refused["id"], refused["code"]) == ("bad", "invalid_arguments")


async def test_a_bad_filter_is_an_error_with_the_id(hub: RunningHub) -> None:
    async with raw_client(hub.url) as peer:
        (kind,) = await ask_log(peer, "k", kind="no such kind")
        (limit,) = await ask_log(peer, "l", limit=10_001)
        (cursor,) = await ask_log(peer, "c", cursor="abc")
        await peer.send({"type": "log_query", "id": "p", "instrument": "Kiln"})
        pattern = await peer.receive_type("error")
        await peer.send({"type": "history_query", "id": "h", "instrument": "Kiln"})
        history = await peer.receive_type("error")
    assert [e["code"] for e in (kind, limit, cursor)] == ["invalid_arguments"] * 3
    assert [e["id"] for e in (kind, limit, cursor)] == ["k", "l", "c"]
    # The code the HTTP routes answer for the same instrument, the message
    # saying what a pattern (an id) is.
    assert (pattern["id"], pattern["code"]) == ("p", "invalid_instrument_id")
    assert "not a valid pattern" in pattern["message"]
    assert (history["id"], history["code"]) == ("h", "invalid_instrument_id")
    assert "not a valid instrument id" in history["message"]
    for path, params in (("/api/log", {"instrument": "Kiln"}), ("/api/history/Kiln", {})):
        status, body = await rest(hub.url, path, None, **params)
        assert (status, body["code"]) == (400, "invalid_instrument_id"), path


async def test_a_grant_reads_over_the_socket_what_it_reads_over_http(tmp_path: Path) -> None:
    """olga may watch kiln-* only: not balance's log rows, not the whole log, either way."""
    async with auth_lab(tmp_path) as lab:
        await fill(
            lab.hub, seconds=40, token=lab.tokens["pi-1"], instruments=("kiln-air", "balance")
        )
        olga = lab.tokens["olga"]
        async with greeted(lab.url, "/ws/client", client_hello(olga, "olga")) as peer:
            (own,) = await ask_log(peer, "1", instrument="kiln-*", limit=1000)
            (other,) = await ask_log(peer, "2", instrument="balance")
            (whole,) = await ask_log(peer, "3")
            (glob,) = await ask_log(peer, "4", instrument="*")
            await peer.send({"type": "history_query", "id": "5", "instrument": "balance"})
            history = await peer.receive_type("error")
        assert own["type"] == "log_result" and own["entries"]
        assert {e["instrument"] for e in own["entries"]} <= {"kiln-air", None}
        for refused, request_id in ((other, "2"), (whole, "3"), (glob, "4"), (history, "5")):
            assert (refused["type"], refused["code"], refused["id"]) == (
                "error",
                "forbidden",
                request_id,
            )
        for params in ({"instrument": "balance"}, {}, {"instrument": "*"}):
            status, _ = await rest(lab.url, "/api/log", olga, **params)
            assert status == 403, params
        status, body = await rest(lab.url, "/api/log", olga, instrument="kiln-*", limit="1000")
        assert status == 200
        assert [e["id"] for e in body["entries"]] == [e["id"] for e in own["entries"]]
        # The refusals are logged, with who asked.
        status, body = await rest(lab.url, "/api/log", lab.tokens["ada"], kind="refused")
        refused_by_olga = [e for e in body["entries"] if e["peer"].endswith("@olga")]
        assert len(refused_by_olga) >= 4


async def test_a_version_3_client_is_still_welcomed_with_3(hub: RunningHub) -> None:
    async with raw_peer(hub.url, "/ws/client") as peer:
        await peer.send({"type": "client_hello", "protocol": 3, "name": "old"})
        welcome = await peer.receive()
        await peer.send({"type": "list_instruments", "id": "1"})
        listed = await peer.receive_type("instrument_list")
    assert (welcome["type"], welcome["protocol"]) == ("welcome", 3)
    assert listed["id"] == "1"
