"""The bus seam in one process: two hubs on a `LocalBus`, raw agent and client (no NATS)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kleinmaelzung.hub import HubConfig
from kleinmaelzung.hub.app import RunningHub, start_hub
from kleinmaelzung.hub.bus import LocalBroker, LocalBus, subject_matches, subject_token

from .peers import data, instrument, raw_agent, raw_client


def test_subject_tokens_are_safe_and_one_to_one() -> None:
    ids = ["kiln-air", "kiln.air", "kiln_air", "kiln_2eair", "a._", "a_."]
    tokens = [subject_token(i) for i in ids]
    assert len(set(tokens)) == len(ids)
    assert all(t and not set(t) & set(".*> \t") for t in tokens)
    assert subject_token("kiln-air") == "kiln-air"  # readable where it can be


def test_subject_patterns_match_as_nats_does() -> None:
    assert subject_matches("k.i.*.*", "k.i.balance.data")
    assert not subject_matches("k.i.*.*", "k.i.balance")
    assert subject_matches("k.>", "k.i.balance.data")
    assert not subject_matches("k.presence", "k.presence.x")


@pytest.fixture
async def two_hubs(tmp_path: Path) -> AsyncIterator[tuple[RunningHub, RunningHub]]:
    broker = LocalBroker()
    hubs = []
    for name in ("a", "b"):
        config = HubConfig(port=0, data_dir=tmp_path / name, name=f"hub-{name}")
        hubs.append(await start_hub(config, bus=LocalBus(broker)))
    try:
        yield hubs[0], hubs[1]
    finally:
        for hub in hubs:
            await hub.stop()


async def test_data_status_and_commands_cross_hubs(two_hubs: tuple[RunningHub, RunningHub]) -> None:
    a, b = two_hubs
    async with raw_client(b.url) as client:
        await client.send({"type": "subscribe", "id": "s1", "patterns": ["scale.*"]})
        assert (await client.receive_type("subscribed"))["instruments"] == []
        async with raw_agent(a.url, "pi-1", [instrument("scale.left")]) as agent:
            status = await client.receive_type("status")
            assert (status["instrument"], status["state"]) == ("scale.left", "online")
            await agent.send(data("scale.left", 1, 2))
            received = await client.receive_type("data")
            assert [s["seq"] for s in received["samples"]] == [1, 2]

            await client.send(
                {"type": "command", "id": "c1", "instrument": "scale.left", "name": "tare"}
            )
            forwarded = await agent.receive_type("command")
            assert forwarded["name"] == "tare"
            await agent.send({"type": "reply", "id": forwarded["id"], "ok": True, "result": 0})
            reply = await client.receive_type("reply")
            assert (reply["id"], reply["ok"], reply["result"]) == ("c1", True, 0)
        offline = await client.receive_type("status")
        assert (offline["instrument"], offline["state"]) == ("scale.left", "offline")
