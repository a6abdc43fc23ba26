"""Who serves an instrument: conflicts between agents are refused, and an instrument can move."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from kleinmaelzung.hub import RunningHub
from kleinmaelzung.protocol import PROTOCOL_VERSION

from .peers import instrument, raw_agent, raw_client, raw_peer


async def hello_answer(url: str, agent_id: str, ids: list[str]) -> tuple[dict[str, object], int]:
    """The hub's answer to a hello, and the close code if it closed."""
    async with raw_peer(url, "/ws/agent") as peer:
        await peer.send(
            {
                "type": "agent_hello",
                "protocol": PROTOCOL_VERSION,
                "agent_id": agent_id,
                "run": "r1",
                "instruments": [instrument(i) for i in ids],
            }
        )
        answer = await peer.receive()
        if answer["type"] == "welcome":
            return answer, 0
        closing = await peer.ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        return answer, peer.ws.close_code or 0


async def test_an_instrument_served_by_another_connected_agent_is_refused(
    hub: RunningHub,
) -> None:
    async with raw_agent(hub.url, "pi-1", [instrument("kiln-air")]) as first:
        answer, close = await hello_answer(hub.url, "pi-2", ["kiln-air", "balance"])
        assert (answer["code"], close) == ("duplicate_id", 4003)
        assert "'kiln-air' is already served by agent 'pi-1'" in str(answer["message"])
        answer, close = await hello_answer(hub.url, "pi-3", ["balance", "balance"])
        assert (answer["code"], close) == ("duplicate_id", 4003)
        assert "announced twice: balance" in str(answer["message"])
        # The first agent is untouched, and nothing of the refused ones is listed.
        await first.send(
            {
                "type": "data",
                "samples": [{"instrument": "kiln-air", "seq": 0, "ts": 1.0, "values": {}}],
            }
        )
        assert (await first.receive_type("ack"))["seqs"] == {"kiln-air": 0}
        async with raw_client(hub.url) as client:
            await client.send({"type": "list_instruments", "id": "1"})
            listed = (await client.receive_type("instrument_list"))["instruments"]
            assert [(r["id"], r["agent"]) for r in listed] == [("kiln-air", "pi-1")]


async def test_an_instrument_moves_to_another_agent_once_its_own_is_gone(
    hub: RunningHub,
) -> None:
    async with raw_agent(hub.url, "pi-1", [instrument("kiln-air")]):
        pass
    async with raw_agent(hub.url, "pi-2", [instrument("kiln-air")]), raw_client(hub.url) as client:
        await client.send({"type": "list_instruments", "id": "1"})
        listed = (await client.receive_type("instrument_list"))["instruments"]
        assert [(r["id"], r["agent"], r["state"]) for r in listed] == [
            ("kiln-air", "pi-2", "online")
        ]


async def test_each_instrument_says_since_when_its_state_holds(hub: RunningHub) -> None:
    async def listed() -> dict[str, object]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(hub.url + "/api/instruments") as response,
        ):
            records = await response.json()
        return {r["id"]: r for r in records}["kiln-air"]  # type: ignore[no-any-return]

    def since(record: Any) -> float:
        return float(record["since"])

    started = time.time()
    async with raw_client(hub.url) as client:
        async with raw_agent(hub.url, "pi-1", [instrument("kiln-air")]) as agent:
            online = await listed()
            assert online["state"] == "online"  # type: ignore[index]
            assert started - 1 <= since(online) <= time.time()
            await client.send({"type": "subscribe", "id": "s", "patterns": ["kiln-air"]})
            await client.receive_type("subscribed")
            for reason in ("no answer", "port vanished"):
                await agent.send(
                    {"type": "status", "instrument": "kiln-air", "state": "faulted",
                     "ts": time.time(), "reason": reason}
                )  # fmt: skip
                while (await client.receive_type("status"))["reason"] != reason:
                    pass  # the status the subscription began with
                if reason == "no answer":
                    faulted = await listed()
                    assert since(faulted) >= since(online)
            # Another reason, the same state: since stays.
            assert since(await listed()) == since(faulted)
        while (await client.receive_type("status"))["state"] != "offline":
            pass
        assert since(await listed()) >= since(faulted)
