"""The hub does what docs/protocol.md says, point by point (issue 7, defect 14)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import msgspec
import pytest

from kleinmaelzung.hub import HubConfig, RunningHub, start_hub
from kleinmaelzung.protocol import PROTOCOL_VERSION, Data, Limits, hub_to_client_decoder

from .peers import instrument, raw_agent, raw_client, raw_peer


def sample(instrument_id: str, seq: int, **values: object) -> dict[str, object]:
    return {"instrument": instrument_id, "seq": seq, "ts": 1.0 + seq, "values": values}


async def test_a_hello_without_a_run_is_refused_and_closed(hub: RunningHub) -> None:
    # An empty run made every reconnect a new run: resent samples were logged twice.
    for run in ({}, {"run": ""}):
        async with raw_peer(hub.url, "/ws/agent") as peer:
            await peer.send(
                {
                    "type": "agent_hello",
                    "protocol": PROTOCOL_VERSION,
                    "agent_id": "pi",
                    "instruments": [],
                    **run,
                }
            )
            error = await peer.receive()
            assert (error["type"], error["code"]) == ("error", "invalid_message")
            assert "run" in error["message"]
            closing = await peer.ws.receive()
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert peer.ws.close_code == 4000


async def test_a_seq_at_or_below_the_newest_is_dropped_and_acks_never_go_back(
    hub: RunningHub,
) -> None:
    async with (
        raw_agent(hub.url, "pi", [instrument("balance")]) as agent,
        raw_client(hub.url) as client,
    ):
        await client.send({"type": "subscribe", "id": "s", "patterns": ["balance"]})
        await client.receive_type("subscribed")
        await agent.send({"type": "data", "samples": [sample("balance", 5, mass=1.0)]})
        assert (await agent.receive_type("ack"))["seqs"] == {"balance": 5}
        # Seq 3 was never sent before, but it is below the newest: dropped.
        await agent.send({"type": "data", "samples": [sample("balance", 3, mass=1.0)]})
        assert (await agent.receive_type("ack"))["seqs"] == {"balance": 5}
        await agent.send({"type": "data", "samples": [sample("balance", 6, mass=1.0)]})
        assert (await agent.receive_type("ack"))["seqs"] == {"balance": 6}
        seqs = []
        while len(seqs) < 2:
            seqs += [s["seq"] for s in (await client.receive_type("data"))["samples"]]
        assert seqs == [5, 6]


async def test_the_hub_keeps_to_its_own_size_limit_for_answers(tmp_path: Path) -> None:
    limits = Limits(max_hub_message_bytes=4000)
    running = await start_hub(HubConfig(port=0, data_dir=tmp_path / "h", limits=limits))
    try:
        many = [{**instrument(f"thermo-{i}"), "description": "x" * 300} for i in range(20)]
        async with raw_agent(running.url, "pi", many), raw_client(running.url) as client:
            await client.send({"type": "list_instruments", "id": "7"})
            answer = await client.receive_type("error")
            assert (answer["id"], answer["code"]) == ("7", "message_too_large")
            assert "over the hub's limit of 4000" in answer["message"]
    finally:
        await running.stop()


def test_peers_accept_what_the_hub_may_send_and_integers_stay_integers() -> None:
    decoder = hub_to_client_decoder()
    values = {"count": 3, "mass": 2.5, "stable": True, "unit": "g"}
    big = (
        b'{"type":"data","samples":['
        + b",".join(
            b'{"instrument":"a","seq":%d,"ts":1.0,"values":{"count":3,"mass":2.5,"stable":true,'
            b'"unit":"g"}}' % i
            for i in range(30_000)
        )
        + b"]}"
    )
    assert len(big) > Limits().max_message_bytes  # more than peers may send to the hub
    message = decoder.decode(big)
    assert isinstance(message, Data)
    assert message.samples[0].values == values
    assert type(message.samples[0].values["count"]) is int


async def test_an_undeclared_channel_is_delivered_and_the_agent_told_once(
    hub: RunningHub,
) -> None:
    async with (
        raw_agent(hub.url, "pi", [instrument("balance")]) as agent,
        raw_client(hub.url) as client,
    ):
        await client.send({"type": "subscribe", "id": "s", "patterns": ["balance"]})
        await client.receive_type("subscribed")
        for seq in range(3):
            await agent.send(
                {"type": "data", "samples": [sample("balance", seq, mass=1.0, tare=0.5)]}
            )
        error = await agent.receive_type("error")
        assert error["code"] == "invalid_message"
        assert "'tare'" in error["message"] and "did not declare" in error["message"]
        received = []
        while len(received) < 3:
            received += (await client.receive_type("data"))["samples"]
        assert received[0]["values"] == {"mass": 1.0, "tare": 0.5}
        # Told once: the next messages are acks only.
        with pytest.raises(TimeoutError):
            await agent.receive_type("error", timeout=0.5)


async def test_the_log_answer_keeps_to_the_hubs_size_limit_newest_first(tmp_path: Path) -> None:
    limits = Limits(max_hub_message_bytes=6000)
    running = await start_hub(HubConfig(port=0, data_dir=tmp_path / "h", limits=limits))
    try:
        async with raw_agent(running.url, "pi", [instrument("balance")]) as agent:
            for seq in range(20):
                await agent.send(
                    {"type": "data", "samples": [sample("balance", seq, note="x" * 800)]}
                )
            await agent.receive_type("error")  # 'note' is not declared: told once
            await running.hub.store.flush()
        async with (
            aiohttp.ClientSession() as session,
            session.get(running.url + "/api/log", params={"limit": "1000"}) as response,
        ):
            body = await response.read()
        assert response.status == 200
        assert len(body) <= 6000
        entries = msgspec.json.decode(body)["entries"]
        data = [e["message"]["samples"][0]["seq"] for e in entries if e["type"] == "data"]
        assert data and data == sorted(data, reverse=True) and data[0] == 19
    finally:
        await running.stop()
