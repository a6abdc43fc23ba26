"""The client library against a real hub, fed by a raw agent peer."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

import kleinmaelzung.client.aio as aio
from kleinmaelzung.client import (
    Client,
    CommandError,
    ConnectionLost,
    HandshakeError,
    HubUnreachable,
    Sample,
    Status,
    SyncClient,
)
from kleinmaelzung.hub import HubConfig, RunningHub, start_hub

from ..hub.peers import RawPeer, instrument, raw_agent

DEADLINE_S = 5.0


async def publish(agent: RawPeer, instrument_id: str, *seqs: int) -> None:
    await agent.send(
        {
            "type": "data",
            "samples": [
                {"instrument": instrument_id, "seq": s, "ts": 100.0 + s, "values": {"mass": s}}
                for s in seqs
            ],
        }
    )


async def answer_commands(agent: RawPeer) -> None:
    """Play the instrument: tare succeeds, zero fails."""
    while True:
        command = await agent.receive_type("command", timeout=60)
        if command["name"] == "tare":
            reply = {"type": "reply", "id": command["id"], "ok": True, "result": {"tare": 1.5}}
        else:
            reply = {
                "type": "reply",
                "id": command["id"],
                "ok": False,
                "error": {"code": "instrument_error", "message": "not stable"},
            }
        await agent.send(reply)


async def test_subscription_gets_matching_samples_in_order(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi", [instrument("kiln-air"), instrument("balance")]) as agent,
        Client(hub.url, name="t") as client,
    ):
        subscription = await client.subscribe("kiln-*")
        assert subscription.instruments == ["kiln-air"]
        for seq in range(3):
            await publish(agent, "balance", seq)
            await publish(agent, "kiln-air", seq)
        received = [await asyncio.wait_for(anext(subscription), DEADLINE_S) for _ in range(3)]
        assert [(s.instrument, s.seq) for s in received] == [("kiln-air", i) for i in range(3)]
        assert all(isinstance(s, Sample) for s in received)


async def test_two_subscriptions_on_one_connection_each_get_their_own(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi", [instrument("kiln-air"), instrument("balance")]) as agent,
        Client(hub.url) as client,
    ):
        kiln = await client.subscribe("kiln-air")
        everything = await client.subscribe("*")
        await publish(agent, "balance", 0)
        await publish(agent, "kiln-air", 0)
        assert (await asyncio.wait_for(anext(kiln), DEADLINE_S)).instrument == "kiln-air"
        first = await asyncio.wait_for(anext(everything), DEADLINE_S)
        second = await asyncio.wait_for(anext(everything), DEADLINE_S)
        assert [first.instrument, second.instrument] == ["balance", "kiln-air"]
        await kiln.close()
        await publish(agent, "kiln-air", 1)
        assert (await asyncio.wait_for(anext(everything), DEADLINE_S)).seq == 1


async def test_commands_and_their_errors(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi", [instrument("balance", ("tare", "zero"))]) as agent,
        Client(hub.url) as client,
    ):
        player = asyncio.create_task(answer_commands(agent))
        try:
            assert await client.command("balance", "tare") == {"tare": 1.5}
            with pytest.raises(CommandError) as info:
                await client.command("balance", "zero")
            assert (info.value.code, info.value.message) == ("instrument_error", "not stable")
            with pytest.raises(CommandError) as info:
                await client.command("scale", "tare")
            assert info.value.code == "unknown_instrument"
            records = await client.instruments()
            assert [(r.id, r.state, r.agent) for r in records] == [("balance", "online", "pi")]
        finally:
            player.cancel()


async def test_status_events_when_the_agent_leaves(hub: RunningHub) -> None:
    async with Client(hub.url) as client:
        async with raw_agent(hub.url, "pi", [instrument("balance")]):
            events = await client.subscribe("balance", status=True)
            online = await asyncio.wait_for(anext(events), DEADLINE_S)
            assert isinstance(online, Status) and online.state == "online"
        offline = await asyncio.wait_for(anext(events), DEADLINE_S)
        assert isinstance(offline, Status)
        assert (offline.state, offline.reason) == ("offline", "agent disconnected")


async def test_hub_going_away_ends_subscriptions_with_connection_lost(tmp_path: Path) -> None:
    running = await start_hub(HubConfig(port=0, data_dir=tmp_path / "h"))
    client = Client(running.url)
    await client.connect()
    subscription = await client.subscribe("*")
    await running.stop()
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(anext(subscription), DEADLINE_S)
    await client.close()


async def test_unreachable_hub_fails_fast_with_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(HubUnreachable, match=f"127.0.0.1:{port}/ws/client"):
        await asyncio.wait_for(Client(f"http://127.0.0.1:{port}").connect(), DEADLINE_S)


async def test_refused_handshake_raises(hub: RunningHub, monkeypatch: pytest.MonkeyPatch) -> None:
    # A client from the future: the hub refuses its protocol version.
    monkeypatch.setattr(aio, "PROTOCOL_VERSION", 99)
    with pytest.raises(HandshakeError) as info:
        await Client(hub.url).connect()
    assert info.value.code == "unsupported_protocol"


async def test_sync_client_in_a_thread(hub: RunningHub) -> None:
    async with raw_agent(hub.url, "pi", [instrument("balance")]) as agent:

        def script() -> list[int]:
            with SyncClient(hub.url) as client:
                assert [r.id for r in client.instruments()] == ["balance"]
                return [s.seq for s in client.subscribe("balance", count=3)]  # type: ignore[union-attr]

        job = asyncio.create_task(asyncio.to_thread(script))
        seq = 0
        while not job.done():
            await publish(agent, "balance", seq)
            seq += 1
            await asyncio.wait([job], timeout=0.05)
        seqs = await job
        assert len(seqs) == 3
        assert seqs == list(range(seqs[0], seqs[0] + 3))
