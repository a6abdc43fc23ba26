"""`/metrics`: the hub's state in Prometheus's format, as Prometheus's own parser reads it."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from kleinmaelzung.hub import RunningHub

from .auth_setup import auth_lab
from .peers import instrument, raw_agent, raw_client


async def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Per sample name (``kmz_messages_total``, ``kmz_command_seconds_bucket``): value by labels."""
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def test_metrics_show_connections_instruments_agents_and_the_log(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi", [instrument("balance"), instrument("kiln-air")]) as agent,
        raw_client(hub.url, "dashboard"),
    ):
        sample = {"instrument": "balance", "seq": 0, "ts": time.time(), "values": {}}
        await agent.send({"type": "data", "samples": [sample]})
        await agent.send(
            {
                "type": "agent_state",
                "spool_depth": 7,
                "spool_oldest": None,
                "dropped": 2,
                "uptime_s": 3600.5,
                "cpu_pct": 4.5,
                "rss_bytes": 40 << 20,
            }
        )
        await agent.receive_type("ack")
        families = await scrape(hub.url)
    assert families["kmz_connections"][(("kind", "agent"),)] == 1
    assert families["kmz_connections"][(("kind", "client"),)] == 1
    assert families["kmz_instruments"][(("state", "online"),)] == 2
    assert families["kmz_agent_spool_samples"][(("agent", "pi"),)] == 7
    assert families["kmz_agent_spool_dropped_total"][(("agent", "pi"),)] == 2
    offset = families["kmz_agent_clock_offset_seconds"][(("agent", "pi"),)]
    assert abs(offset) < 1.0
    assert families["kmz_agent_uptime_seconds"][(("agent", "pi"),)] == 3600.5
    assert families["kmz_agent_cpu_percent"][(("agent", "pi"),)] == 4.5
    assert families["kmz_agent_rss_bytes"][(("agent", "pi"),)] == 40 << 20
    assert families["kmz_log_degraded"][()] == 0
    assert "kmz_log_backlog" in families and "kmz_commands_in_flight" in families


async def test_metrics_count_messages_deliveries_refusals_and_command_round_trips(
    hub: RunningHub,
) -> None:
    async with (
        raw_agent(hub.url, "pi", [instrument("balance")]) as agent,
        raw_client(hub.url, "dashboard") as client,
        raw_client(hub.url, "notebook") as notebook,
    ):
        for watcher in (client, notebook):
            await watcher.send({"type": "subscribe", "id": "s", "patterns": ["balance"]})
            await watcher.receive_type("subscribed")
        for seq in range(3):
            sample = {"instrument": "balance", "seq": seq, "ts": time.time(), "values": {}}
            await agent.send({"type": "data", "samples": [sample]})
            await client.receive_type("data")
        await client.send({"type": "command", "id": "c1", "instrument": "balance", "name": "tare"})
        forwarded = await agent.receive_type("command")
        await agent.send({"type": "reply", "id": forwarded["id"], "ok": True})
        assert (await client.receive_type("reply"))["ok"] is True
        await client.send({"type": "command", "id": "c2", "instrument": "nope", "name": "tare"})
        assert (await client.receive_type("reply"))["ok"] is False
        await client.send("{not json")
        assert (await client.receive_type("error"))["code"] == "invalid_json"
        families = await scrape(hub.url)
    assert families["kmz_messages_total"][(("direction", "in"), ("type", "data"))] == 3
    assert families["kmz_messages_total"][(("direction", "in"), ("type", "command"))] == 2
    assert families["kmz_messages_total"][(("direction", "out"), ("type", "reply"))] == 2
    assert families["kmz_sample_deliveries_total"][()] == 6  # 3 batches x 2 clients
    assert families["kmz_refused_total"][(("code", "invalid_json"),)] == 1
    assert families["kmz_errors_sent_total"][(("code", "invalid_json"),)] == 1
    ok = (("outcome", "ok"),)
    assert families["kmz_command_seconds_count"][ok] == 1
    assert 0 < families["kmz_command_seconds_sum"][ok] < 5
    assert families["kmz_command_seconds_bucket"][(("le", "+Inf"), ("outcome", "ok"))] == 1


async def test_metrics_need_a_viewer_token_when_the_hub_requires_tokens(tmp_path: Path) -> None:
    async with auth_lab(tmp_path) as lab, aiohttp.ClientSession() as http:
        async with http.get(lab.url + "/metrics") as response:
            assert response.status == 401
        viewer = {"Authorization": f"Bearer {lab.tokens['vic']}"}
        async with http.get(lab.url + "/metrics", headers=viewer) as response:
            assert response.status == 200
            assert "kmz_connections" in await response.text()
