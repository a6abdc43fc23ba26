"""The hub's life: start on a busy port, shut down cleanly, remember instruments across restarts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from kleinmaelzung.hub import HubConfig, HubStartError, SqliteStore, create_app, start_hub

from .peers import DEADLINE_S, RawPeer, data, instrument, raw_agent, raw_client

# Issue 7, defect 4: it took about 6 s and closed peers with 1006.
PROMPT_SHUTDOWN_S = 1.5


async def until_closed(peer: RawPeer) -> list[dict[str, Any]]:
    """Every message up to the close, within a deadline; the close code is then on `peer.ws`."""
    messages = []
    async with asyncio.timeout(DEADLINE_S):
        while True:
            msg = await peer.ws.receive()
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                messages.append(msgspec.json.decode(msg.data))
            else:
                return messages


async def test_shutdown_acknowledges_what_is_committed_and_closes_with_1001(
    tmp_path: Path,
) -> None:
    running = await start_hub(HubConfig(port=0, data_dir=tmp_path / "h"))
    stopped = False
    try:
        async with (
            raw_agent(running.url, "pi", [instrument("balance")]) as agent,
            raw_client(running.url) as client,
        ):
            await agent.send(data("balance", 0, 1, 2))
            await agent.send(data("balance", 3))
            # The hub has the samples once it forwarded them to a subscriber.
            await client.send({"type": "subscribe", "id": "s", "patterns": ["balance"]})
            await client.receive_type("subscribed")
            await agent.send(data("balance", 4))
            await client.receive_type("data")
            started = time.monotonic()
            stopping = asyncio.create_task(running.stop())
            to_agent, _ = await asyncio.gather(until_closed(agent), until_closed(client))
            await stopping
            stopped = True
            took = time.monotonic() - started
            acks = [m["seqs"]["balance"] for m in to_agent if m["type"] == "ack"]
            assert acks and max(acks) == 4, to_agent  # nothing committed left unacknowledged
            assert (agent.ws.close_code, client.ws.close_code) == (1001, 1001)
            assert took < PROMPT_SHUTDOWN_S
    finally:
        if not stopped:
            await running.stop()


async def test_an_idle_hub_stops_promptly(tmp_path: Path) -> None:
    running = await start_hub(HubConfig(port=0, data_dir=tmp_path / "h"))
    started = time.monotonic()
    await running.stop()
    assert time.monotonic() - started < PROMPT_SHUTDOWN_S


async def test_a_busy_port_is_a_clear_error_and_leaves_nothing_running(tmp_path: Path) -> None:
    first = await start_hub(HubConfig(port=0, data_dir=tmp_path / "a"))
    try:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(HubStartError, match=f"port {port} on 127.0.0.1 is in use"):
            await start_hub(HubConfig(port=port, data_dir=tmp_path / "b"))
    finally:
        await first.stop()


async def get_json(url: str, method: str = "GET") -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE_S)) as session,
        session.request(method, url) as response,
    ):
        return response.status, await response.json()


async def test_instruments_are_remembered_offline_across_a_restart(tmp_path: Path) -> None:
    config = HubConfig(port=0, data_dir=tmp_path / "h")
    running = await start_hub(config)
    async with raw_agent(
        running.url, "pi", [instrument("kiln-air"), instrument("balance")]
    ) as agent:
        await agent.send(data("kiln-air", 0))
        await agent.receive_type("ack")
    await running.stop()

    running = await start_hub(config)
    try:
        status, listed = await get_json(running.url + "/api/instruments")
        by_id = {r["id"]: r for r in listed}
        assert sorted(by_id) == ["balance", "kiln-air"]
        assert {r["state"] for r in listed} == {"offline"}
        assert by_id["kiln-air"]["last_seen"] is not None
        assert by_id["balance"]["last_seen"] is None  # it never sent a reading
        async with raw_client(running.url) as client:
            await client.send(
                {"type": "command", "id": "1", "instrument": "balance", "name": "tare"}
            )
            reply = await client.receive_type("reply")
            assert reply["error"]["code"] == "instrument_offline"

        status, answer = await get_json(running.url + "/api/instruments/balance", "DELETE")
        assert (status, answer) == (200, {"forgotten": "balance"})
        status, answer = await get_json(running.url + "/api/instruments/balance", "DELETE")
        assert (status, answer["code"]) == (404, "unknown_instrument")
        async with raw_agent(running.url, "pi", [instrument("kiln-air")]):
            status, answer = await get_json(running.url + "/api/instruments/kiln-air", "DELETE")
            assert (status, answer["code"]) == (409, "instrument_online")
    finally:
        await running.stop()

    running = await start_hub(config)  # forgetting is durable
    try:
        _, listed = await get_json(running.url + "/api/instruments")
        assert [r["id"] for r in listed] == ["kiln-air"]
    finally:
        await running.stop()


async def test_an_app_built_with_a_store_passed_in_opens_it_and_acknowledges(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "given.sqlite3")
    app = create_app(config=HubConfig(port=0, data_dir=tmp_path / "unused"), store=store)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with raw_agent(f"http://127.0.0.1:{port}", "pi", [instrument("balance")]) as agent:
            await agent.send(data("balance", 0, 1))
            ack = await agent.receive_type("ack")
            assert ack["seqs"] == {"balance": 1}
    finally:
        await runner.cleanup()
    assert not (tmp_path / "unused").exists()


async def test_an_agent_replaced_by_a_newer_connection_is_told_why(tmp_path: Path) -> None:
    running = await start_hub(HubConfig(port=0, data_dir=tmp_path / "h"))
    try:
        async with (
            raw_agent(running.url, "pi", [instrument("balance")]) as first,
            raw_agent(running.url, "pi", [instrument("balance")]) as second,
        ):
            told = await until_closed(first)
            errors = [m for m in told if m["type"] == "error"]
            assert errors and errors[-1]["code"] == "duplicate_agent"
            assert "replaced by a newer connection of agent 'pi'" in errors[-1]["message"]
            assert first.ws.close_code == 4003
            # The newer one is served.
            await second.send(data("balance", 0))
            assert (await second.receive_type("ack"))["seqs"] == {"balance": 0}
    finally:
        await running.stop()


async def test_every_ack_names_the_agent_run_whose_samples_were_committed(
    tmp_path: Path,
) -> None:
    """A restarted agent counts from 0 again: an ack for its old run must name that run.

    Issue 9: acks carried no run id, and a restarted agent received an ack
    for its previous run's seqs and forgot samples the hub may not have logged.
    """
    running = await start_hub(HubConfig(port=0, data_dir=tmp_path / "h"))
    try:
        hub = running.hub
        async with raw_agent(running.url, "pi", [instrument("balance")], run="old") as old:
            await old.send(data("balance", 0, 1, 2, 3, 4, 5, 6, 7, 8, 9))
            ack = await old.receive_type("ack")
            assert (ack["run"], ack["seqs"]) == ("old", {"balance": 9})
        async with raw_agent(running.url, "pi", [instrument("balance")], run="new") as new:
            # A commit of the old run lands now (a slow disk): its ack names seq 9.
            hub.acks.committed({"pi/old": {"balance": 9}})
            hub.acks.flush()
            await new.send(data("balance", 0))
            acks = [await new.receive_type("ack"), await new.receive_type("ack")]
            assert {(a["run"], a["seqs"]["balance"]) for a in acks} == {("old", 9), ("new", 0)}
    finally:
        await running.stop()


async def test_unsubscribing_stops_data_and_unknown_patterns_are_ignored(
    tmp_path: Path,
) -> None:
    running = await start_hub(HubConfig(port=0, data_dir=tmp_path / "h"))
    try:
        async with (
            raw_agent(running.url, "pi", [instrument("kiln-air"), instrument("balance")]) as agent,
            raw_client(running.url) as client,
        ):
            await client.send({"type": "subscribe", "id": "1", "patterns": ["kiln-*", "balance"]})
            await client.receive_type("subscribed")
            await client.send(
                {"type": "unsubscribe", "id": "2", "patterns": ["kiln-*", "never-subscribed"]}
            )
            answer = await client.receive_type("subscribed")
            assert (answer["patterns"], answer["instruments"]) == (["balance"], ["balance"])
            await agent.send(data("kiln-air", 0))
            await agent.send(data("balance", 0))
            received = await client.receive_type("data")
            assert [s["instrument"] for s in received["samples"]] == ["balance"]
    finally:
        await running.stop()
