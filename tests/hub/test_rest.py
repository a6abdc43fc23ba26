"""The HTTP API answers JSON, and bad parameters get a 400 that says what was wrong."""

from __future__ import annotations

import aiohttp

from kleinmaelzung.hub import RunningHub

from .peers import instrument, raw_agent, raw_client


async def test_health_instruments_log_and_the_dashboard(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi-1", [instrument("balance")]),
        aiohttp.ClientSession() as http,
    ):
        async with http.get(hub.url + "/api/health") as response:
            health = await response.json()
        assert (health["status"], health["agents"], health["instruments"]) == ("ok", 1, 1)
        async with http.get(hub.url + "/api/instruments") as response:
            (record,) = await response.json()
        assert (record["id"], record["state"], record["agent"]) == ("balance", "online", "pi-1")
        await hub.hub.store.flush()
        async with http.get(hub.url + "/api/log?limit=5") as response:
            entries = (await response.json())["entries"]
        hello = next(e for e in entries if e["type"] == "agent_hello")
        assert hello["message"]["agent_id"] == "pi-1"  # embedded as JSON, not a string
        async with http.get(hub.url + "/") as response:
            page = await response.text()
        # The dashboard: a page whose script reads the same API (tests/browser drive it).
        assert response.status == 200 and 'src="/static/js/app.js"' in page


async def test_credentials_never_reach_the_log(hub: RunningHub) -> None:
    async with raw_agent(hub.url, "pi-1", [], token_="s3cret"):
        pass
    await hub.hub.store.flush()
    entries = await hub.hub.store.query(limit=50)
    assert entries
    assert not any(b"s3cret" in bytes(e.message) for e in entries)


async def test_bad_log_parameters(hub: RunningHub) -> None:
    async with aiohttp.ClientSession() as http:
        for query, code in [
            ("limit=many", "invalid_arguments"),
            ("limit=0", "invalid_arguments"),
            ("instrument=Not%20An%20Id", "invalid_instrument_id"),
        ]:
            async with http.get(hub.url + "/api/log?" + query) as response:
                assert response.status == 400
                body = await response.json()
            assert body["code"] == code


async def test_refused_input_is_logged_under_its_own_type_as_a_json_object(
    hub: RunningHub,
) -> None:
    async with raw_client(hub.url) as client:
        await client.send("{not json \xff")
        assert (await client.receive_type("error"))["code"] == "invalid_json"
    await hub.hub.store.flush()
    async with aiohttp.ClientSession() as http, http.get(hub.url + "/api/log") as response:
        entries = (await response.json())["entries"]
    refused = next(e for e in entries if e["direction"] == "in" and e["type"] == "refused")
    assert refused["message"]["error"]["code"] == "invalid_json"
    assert refused["message"]["frame"] == "{not json \xff"
    # The hub's answer is logged too, as the error it is.
    answer = next(e for e in entries if e["direction"] == "out" and e["type"] == "error")
    assert answer["message"]["code"] == "invalid_json"
