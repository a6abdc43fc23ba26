"""The hub's side of raw transcripts: who may ask, agents too old to tap, and `raw` that
nobody asked for or that floods."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from kleinmaelzung.hub import RunningHub
from kleinmaelzung.hub.transcripts import (
    AGENT_WINDOW_EVERY_S,
    ESCAPED_PER_BYTE,
    TRANSIT_GRACE_S,
    Transcripts,
)
from kleinmaelzung.protocol.transcript import MAX_BYTES_PER_S, MAX_DURATION_S

from .auth_setup import agent_hello, auth_lab, client_hello, greeted
from .peers import RawPeer, instrument, raw_agent, raw_client, raw_peer


def transcript(request_id: str, instrument_id: str, **args: Any) -> dict[str, Any]:
    return {
        "type": "command",
        "id": request_id,
        "instrument": instrument_id,
        "name": "transcript",
        "args": args,
    }


def raw(instrument_id: str, data: str) -> dict[str, Any]:
    return {
        "type": "raw",
        "instrument": instrument_id,
        "ts": 1.7e9,
        "direction": "rx",
        "data": data,
    }


async def answer_transcript(agent: RawPeer) -> dict[str, Any]:
    """The agent's side: take the forwarded command and say it runs."""
    command = await agent.receive_type("command")
    await agent.send({"type": "reply", "id": command["id"], "ok": True, "result": {}})
    return command


async def log_of(url: str, token: str | None = None, **params: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/api/log", params={"limit": "1000", **params}, headers=headers) as r,
    ):
        assert r.status == 200, await r.text()
        entries: list[dict[str, Any]] = msgspec.json.decode(await r.read())["entries"]
        return entries


async def logged(url: str, count: int, token: str | None = None, **params: str) -> list[Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while len(entries := await log_of(url, token, **params)) < count:
        assert loop.time() < deadline, entries
        await asyncio.sleep(0.02)
    return entries


async def test_who_may_ask_for_a_transcript(tmp_path: Path) -> None:
    """Driving the instrument at all (operator with a grant over it), or admin; never a viewer."""
    async with auth_lab(tmp_path) as lab:
        hello = agent_hello("pi-1", ("kiln-air", "balance"), lab.tokens["pi-1"])
        async with (
            greeted(lab.url, "/ws/agent", hello) as agent,
            greeted(lab.url, "/ws/client", client_hello(lab.tokens["vic"], "vic")) as vic,
            greeted(lab.url, "/ws/client", client_hello(lab.tokens["olga"], "olga")) as olga,
            greeted(lab.url, "/ws/client", client_hello(lab.tokens["ada"], "ada")) as ada,
        ):
            await vic.send(transcript("1", "kiln-air"))
            refused_vic = await vic.receive_type("reply")
            await olga.send(transcript("2", "balance"))
            refused_olga = await olga.receive_type("reply")
            # olga's grant names set_setpoint only, but covers kiln-air: she may drive it.
            await olga.send(transcript("3", "kiln-air", duration_s=30))
            forwarded = await answer_transcript(agent)
            accepted = await olga.receive_type("reply")
            await ada.send(transcript("4", "balance", max_bytes_per_s=100))
            by_admin = await answer_transcript(agent)
            await ada.receive_type("reply")
        assert (refused_vic["ok"], refused_vic["error"]["code"]) == (False, "forbidden")
        assert (refused_olga["ok"], refused_olga["error"]["code"]) == (False, "forbidden")
        assert forwarded["args"] == {"duration_s": 30.0, "max_bytes_per_s": 2048}
        assert forwarded["deadline"] is not None and accepted["ok"]
        assert by_admin["args"] == {"duration_s": 60.0, "max_bytes_per_s": 100}
        asked = await logged(lab.url, 2, lab.tokens["ada"], kind="transcript")
        assert sorted((e["instrument"], e["peer"].rsplit("@")[1]) for e in asked) == [
            ("balance", "ada"),
            ("kiln-air", "olga"),
        ]
        refused = await logged(lab.url, 2, lab.tokens["ada"], kind="refused", text="transcript")
        assert {e["peer"].rsplit("@")[1] for e in refused} == {"vic", "olga"}


async def test_raw_is_logged_only_while_asked_for_and_within_its_rate(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi", [instrument("balance"), instrument("kiln-air")]) as agent,
        raw_client(hub.url) as client,
    ):
        await agent.send(raw("balance", "nobody asked\\r\\n"))
        unasked = await agent.receive_type("error")
        await agent.send(raw("balance", "still nobody"))  # told once: dropped quietly
        # 64 B/s for 1 s: 4 x 64 x 2 = 512 escaped characters at most.
        await client.send(transcript("1", "balance", duration_s=1, max_bytes_per_s=64))
        await answer_transcript(agent)
        await client.receive_type("reply")
        for _ in range(20):
            await agent.send(raw("balance", "S S      12.345 g\\r\\n"))  # 26 characters each
        flooded = await agent.receive_type("error")
        await agent.send(raw("kiln-air", "no transcript here"))
        other = await agent.receive_type("error")
        await agent.send({**raw("balance", "\x1b[2J"), "data": "\x1b[2J"})
        terminal = await agent.receive_type("error")
    assert unasked["code"] == "rate_limited" and "no transcript" in unasked["message"]
    assert flooded["code"] == "rate_limited" and "rate" in flooded["message"]
    assert other["code"] == "rate_limited"
    # Bytes that could drive a terminal never reach the log.
    assert terminal["code"] == "invalid_message" and "escaped bytes" in terminal["message"]
    await hub.hub.store.flush()
    entries = await log_of(hub.url, kind="raw")
    assert 0 < len(entries) <= 512 // 26 + 1
    assert all(e["instrument"] == "balance" for e in entries)


async def test_a_version_3_agent_is_served_but_not_sent_a_transcript(hub: RunningHub) -> None:
    old = {
        "type": "agent_hello",
        "protocol": 3,
        "agent_id": "old-pi",
        "instruments": [instrument("balance")],
        "run": "r1",
    }
    async with raw_peer(hub.url, "/ws/agent") as agent, raw_client(hub.url) as client:
        await agent.send(old)
        welcome = await agent.receive()
        await client.send(transcript("1", "balance"))
        refused = await client.receive_type("reply")
        await client.send({"type": "command", "id": "2", "instrument": "balance", "name": "tare"})
        command = await agent.receive_type("command")
    assert (welcome["type"], welcome["protocol"]) == ("welcome", 3)
    assert refused["error"]["code"] == "unsupported_protocol"
    assert "protocol 3" in refused["error"]["message"]
    assert command["name"] == "tare"  # the first command the old agent ever got


def test_an_agents_own_config_opens_a_bounded_window_at_most_once_an_hour() -> None:
    windows = Transcripts()
    rate = MAX_BYTES_PER_S * 10  # clamped to what a client may ask
    assert windows.open_by_agent("balance", "pi-1", 9999.0, rate, now=0.0) == MAX_DURATION_S
    assert windows.admit("balance", "pi-1", "x" * 100, now=1.0) is None
    # The same agent announcing again (a reconnect, a restart) neither extends it nor opens more.
    assert windows.open_by_agent("balance", "pi-1", 600.0, 2048, now=300.0) is None
    late = MAX_DURATION_S + TRANSIT_GRACE_S + 1
    assert windows.admit("balance", "pi-1", "x", now=late) is not None
    assert windows.open_by_agent("balance", "pi-1", 600.0, 2048, now=late) is None
    # Its budget is the clamped rate's, not what the agent asked for.
    assert windows.open_by_agent("kiln-air", "pi-1", 1.0, rate, now=0.0) == 1.0
    budget = ESCAPED_PER_BYTE * MAX_BYTES_PER_S * 2.0
    assert windows.admit("kiln-air", "pi-1", "x" * int(budget), now=0.5) is None
    assert windows.admit("kiln-air", "pi-1", "x" * 64, now=0.6) is not None
    # A client's window is never replaced by an agent's.
    windows.open("steep", "pi-1", 60.0, 2048, now=0.0)
    assert windows.open_by_agent("steep", "pi-1", 600.0, 2048, now=1.0) is None
    # An hour after the last one, an agent may open one again.
    assert windows.open_by_agent("balance", "pi-1", 60.0, 2048, AGENT_WINDOW_EVERY_S) == 60.0
