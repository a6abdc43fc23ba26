"""The blocking client, driven from plain synchronous code in a worker thread, across restarts."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

from kleinmaelzung.client import CommandError, Event, HubUnreachable, Sample, SyncClient
from kleinmaelzung.hub import HubConfig, RunningHub, start_hub

from .agent_peer import answer_commands, instrument, publish_until, raw_agent


async def test_sync_client_lists_commands_and_subscribes(hub: RunningHub) -> None:
    async with raw_agent(hub.url, "pi", [instrument("balance", ("tare", "zero"))]) as agent:

        def script() -> list[int]:
            with SyncClient(hub.url, name="notebook") as client:
                assert [r.id for r in client.instruments()] == ["balance"]
                assert client.command("balance", "tare") == {"tare": 1.5}
                with pytest.raises(CommandError, match="instrument_error"):
                    client.command("balance", "zero")
                events = list(client.subscribe("balance", count=3, timeout_s=10))
            assert all(isinstance(e, Sample) for e in events)
            return [e.seq for e in events]  # type: ignore[union-attr]

        player = asyncio.create_task(answer_commands(agent))
        try:
            job = asyncio.ensure_future(asyncio.to_thread(script))
            await publish_until(agent, "balance", job)
            seqs = job.result()
        finally:
            player.cancel()
        assert seqs == list(range(seqs[0], seqs[0] + 3))


async def test_sync_subscription_times_out_without_data(hub: RunningHub) -> None:
    def script() -> None:
        with SyncClient(hub.url) as client:
            events = client.subscribe("balance", timeout_s=0.2)
            with pytest.raises(TimeoutError, match=r"within 0\.2 s"):
                next(events)

    await asyncio.to_thread(script)


def test_unreachable_hub_raises_and_leaves_no_thread() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    before = threading.active_count()
    with pytest.raises(HubUnreachable, match=str(port)), SyncClient(f"http://127.0.0.1:{port}"):
        pass
    assert threading.active_count() == before


async def test_sync_client_reconnects_after_a_hub_restart(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = HubConfig(host="127.0.0.1", port=port, data_dir=tmp_path / "hub")
    running = await start_hub(config)
    subscribed = threading.Event()

    def script() -> Event:
        with SyncClient(running.url, reconnect=True) as client:
            events = client.subscribe("balance", timeout_s=20)
            subscribed.set()
            # Across the restart: the client reconnects and subscribes again.
            event = next(events)
            assert client.instruments()[0].id == "balance"
            return event

    job = asyncio.ensure_future(asyncio.to_thread(script))
    try:
        assert await asyncio.to_thread(subscribed.wait, 10)
        await running.stop()
        running = await start_hub(config)
        async with raw_agent(running.url, "pi", [instrument("balance")]) as agent:
            await publish_until(agent, "balance", job)
        event = job.result()
    finally:
        await running.stop()
    assert isinstance(event, Sample) and event.instrument == "balance"
