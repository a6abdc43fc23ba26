"""The fleet at the hub: agents kept across restarts, and what a version-3 agent is (not) sent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from kleinmaelzung.hub import HubConfig, start_hub

from .peers import instrument, raw_peer

DEADLINE_S = 10.0
TOML = '[[instruments]]\nid = "balance"\nport = "/dev/ttyUSB0"\nprofile = "mt-sics-balance"\n'


async def hello(url: str, agent_id: str, protocol: int) -> dict[str, object]:
    return {
        "type": "agent_hello",
        "protocol": protocol,
        "agent_id": agent_id,
        "instruments": [instrument("balance")],
        "run": "r1",
        "software": "kleinmaelzung/9.9",
    }


async def test_a_version_3_agent_is_sent_no_configuration(tmp_path: Path) -> None:
    hub = await start_hub(HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path))
    try:
        async with raw_peer(hub.url, "/ws/agent") as agent, aiohttp.ClientSession() as http:
            await agent.send(await hello(hub.url, "old-pi", 3))
            assert (await agent.receive())["type"] == "welcome"
            async with http.put(
                hub.url + "/api/agents/old-pi/config", json={"config": TOML, "source": "x.toml"}
            ) as response:
                assert response.status == 409
                assert (await response.json())["code"] == "unsupported_protocol"
            # Nothing reached the agent: the next thing it hears is a reply to its own word.
            await agent.send({"type": "status", "instrument": "nope", "state": "online", "ts": 1})
            assert (await agent.receive())["code"] == "unknown_instrument"
    finally:
        await hub.stop()


async def test_the_hub_remembers_every_agent_across_its_restarts(tmp_path: Path) -> None:
    hub = await start_hub(HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path))
    try:
        async with raw_peer(hub.url, "/ws/agent") as agent:
            await agent.send(await hello(hub.url, "pi-7", 4))
            assert (await agent.receive())["type"] == "welcome"
            await agent.send(
                {"type": "agent_info", "host": "bench-7", "config_revision": 0, "config": TOML}
            )
            await agent.send(
                {"type": "status", "instrument": "balance", "state": "online", "ts": 1}
            )
            async with asyncio.timeout(DEADLINE_S):
                # Polled: the hub has no event for "info taken".
                while not hub.hub.fleet.records(hub.hub.registry, 1.0)[0].host:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
    finally:
        await hub.stop()
    again = await start_hub(HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(again.url + "/api/agents") as response:
                [record] = await response.json()
            async with http.get(again.url + "/api/agents/pi-7/config") as response:
                view = await response.json()
            async with http.put(
                again.url + "/api/agents/pi-7/config", json={"config": TOML}
            ) as response:
                refused = response.status, (await response.json())["code"]
    finally:
        await again.stop()
    assert record["online"] is False and record["run"] is None
    assert record["host"] == "bench-7" and record["software"] == "kleinmaelzung/9.9"
    assert record["instruments"] == ["balance"] and record["last_disconnected"] is not None
    assert record["config_revision"] == 0 and record["remote_config"] == "accept"
    assert view["config"] == TOML and view["online"] is False
    assert refused == (409, "agent_offline")


async def test_an_agent_never_seen_is_unknown(tmp_path: Path) -> None:
    hub = await start_hub(HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path))
    try:
        url = hub.url + "/api/agents/nobody/config"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 404
            assert (await response.json())["code"] == "unknown_agent"
    finally:
        await hub.stop()
