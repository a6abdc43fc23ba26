"""End to end: simulator → agent → hub → clients, each its own process."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys

import msgspec
import pytest

from kleinmaelzung.client import Client, CommandError
from kleinmaelzung.protocol import Sample, Status

from .conftest import Lab
from .processes import get_json, wait_until_async

DEADLINE_S = 10.0


async def next_sample(events: object) -> Sample:
    """The next Sample from a subscription, skipping status events."""
    while True:
        event = await asyncio.wait_for(anext(events), DEADLINE_S)  # type: ignore[call-overload]
        if isinstance(event, Sample):
            return event


async def test_subscribed_client_gets_readings_in_order_and_the_other_none(lab: Lab) -> None:
    async with Client(lab.url, name="subscribed") as watcher, Client(lab.url, name="idle") as idle:
        kiln = watcher.subscribe("kiln-*")
        bystander = idle.subscribe("no-such-*")
        samples = [await next_sample(kiln) for _ in range(10)]
        assert {s.instrument for s in samples} == {"kiln-air"}
        seqs = [s.seq for s in samples]
        assert seqs == list(range(seqs[0], seqs[0] + 10)), "readings missing or out of order"
        assert all(15 < s.values["temperature"] < 260 for s in samples)  # type: ignore[operator]
        assert all(a.ts <= b.ts for a, b in itertools.pairwise(samples))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(anext(bystander), 0.5)


async def test_commands_round_trip_to_the_instrument(lab: Lab) -> None:
    async with Client(lab.url) as client:
        await client.command("kiln-air", "set_setpoint", value=80.0)
        result = await client.command("kiln-air", "get_setpoint")
        assert result["setpoint"] == pytest.approx(80.0)
        with pytest.raises(CommandError) as info:
            await client.command("kiln-air", "set_setpoint", value=900.0)
        assert info.value.code == "invalid_arguments"
        with pytest.raises(CommandError) as info:
            await client.command("kiln-air", "self_destruct")
        assert info.value.code == "unknown_command"


async def test_killing_the_agent_marks_instruments_offline_at_the_client(lab: Lab) -> None:
    async with Client(lab.url) as client:
        events = client.subscribe("balance", status=True)
        await next_sample(events)
        await asyncio.to_thread(lab.agent.kill)
        while True:
            event = await asyncio.wait_for(anext(events), DEADLINE_S)
            if isinstance(event, Status):
                break
        assert (event.instrument, event.state) == ("balance", "offline")
        with pytest.raises(CommandError) as info:
            await client.command("balance", "tare")
        assert info.value.code == "instrument_offline"
        # It comes back by itself when the agent does.
        lab.start_agent()
        while True:
            event = await asyncio.wait_for(anext(events), 20)
            if isinstance(event, Status) and event.state == "online":
                break


async def test_hub_killed_and_restarted_loses_no_sample(lab: Lab) -> None:
    def logged_seqs() -> list[int]:
        document = get_json(lab.url + "/api/log?instrument=kiln-air&limit=10000") or {}
        return sorted(
            sample["seq"]
            for entry in document.get("entries", [])
            if entry["direction"] == "in" and entry["type"] == "data"
            for sample in entry["message"]["samples"]
        )

    before = await wait_until_async(lambda: logged_seqs() or None, "first samples logged")
    await asyncio.to_thread(lab.hub.kill)  # no flush, no goodbye
    await asyncio.to_thread(lab.start_hub)  # blocks until it answers: off the loop
    await wait_until_async(
        lambda: True if lab.instruments().get("kiln-air", {}).get("state") == "online" else None,
        "agent back",
        20.0,
        lab.hub,
        lab.agent,
    )
    target = before[-1] + 20
    seqs = await wait_until_async(
        lambda: s if (s := logged_seqs()) and s[-1] >= target else None,
        "samples after the restart",
        20.0,
        lab.hub,
    )
    first = seqs[0]
    assert seqs == list(range(first, seqs[-1] + 1)), "a gap or a duplicate in the traffic log"


def kmz(lab: Lab, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the kmz CLI as a user would, against the lab's hub."""
    return subprocess.run(
        [sys.executable, "-m", "kleinmaelzung.cli", *args, "--hub", lab.url],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_watch_send_and_log(lab: Lab) -> None:
    watched = kmz(lab, "watch", "kiln-air", "--count", "5", "--json")
    assert watched.returncode == 0, watched.stderr
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    assert len(lines) == 5
    assert {line["instrument"] for line in lines} == {"kiln-air"}
    assert "temperature" in lines[0]["values"]

    sent = kmz(lab, "send", "balance", "tare")
    assert sent.returncode == 0, sent.stderr
    assert "ok" in sent.stdout

    failed = kmz(lab, "send", "balance", "launch")
    assert failed.returncode == 1
    assert "unknown_command" in failed.stderr

    log = kmz(lab, "log", "--instrument", "balance", "--limit", "5", "--json")
    assert log.returncode == 0, log.stderr
    entries = msgspec.json.decode(log.stdout)
    assert entries and all(e["instrument"] == "balance" for e in entries)


async def test_cli_watch_outlives_a_hub_restart(lab: Lab) -> None:
    watch = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "kleinmaelzung.cli", "watch", "kiln-air", "--count", "8"],
        *["--json", "--hub", lab.url],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert watch.stdout is not None
    try:
        seqs = []
        for _ in range(3):
            line = await asyncio.wait_for(watch.stdout.readline(), DEADLINE_S)
            seqs.append(json.loads(line)["seq"])
        await asyncio.to_thread(lab.hub.kill)
        await asyncio.to_thread(lab.start_hub)
        while True:
            line = await asyncio.wait_for(watch.stdout.readline(), 30)
            if not line:
                break
            seqs.append(json.loads(line)["seq"])
        assert await asyncio.wait_for(watch.wait(), DEADLINE_S) == 0
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()
    # Samples sent while the hub was away may be missed, never repeated or reordered.
    assert len(seqs) == 8 and seqs == sorted(set(seqs)), seqs
