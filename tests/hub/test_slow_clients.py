"""A client that does not keep up misses the oldest data, coalesced, and slows no one down."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import msgspec

from kleinmaelzung.hub import HubConfig, start_hub
from kleinmaelzung.protocol import Limits

from .peers import DEADLINE_S, instrument, raw_agent, raw_client

SAMPLES_PER_MESSAGE = 1000
# About 30 MB: well over what the kernel buffers between hub and client (up to
# about 10 MB with autotuning; 15 MB was not always enough).
MESSAGES = 300


def batch(first_seq: int) -> dict[str, object]:
    return {
        "type": "data",
        "samples": [
            {"instrument": "balance", "seq": s, "ts": 1.0 + s, "values": {"mass": 1.0 * s}}
            for s in range(first_seq, first_seq + SAMPLES_PER_MESSAGE)
        ],
    }


async def test_a_stalled_client_misses_the_oldest_while_a_reading_one_gets_everything(
    tmp_path: Path,
) -> None:
    # 32 frames (2 MB here): room for a reading client that a loaded machine
    # holds up for a moment, far less than the ~30 MB that stall the other.
    config = HubConfig(port=0, data_dir=tmp_path / "h", limits=Limits(client_queue_frames=32))
    running = await start_hub(config)
    try:
        async with (
            raw_agent(running.url, "pi", [instrument("balance")]) as agent,
            raw_client(running.url, "stalled") as stalled,
            raw_client(running.url, "reading") as reading,
        ):
            sock = stalled.ws.get_extra_info("socket")
            if sock is not None:  # a small receive window: the stall shows sooner
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            for client in (stalled, reading):
                await client.send({"type": "subscribe", "id": "s", "patterns": ["balance"]})
                await client.receive_type("subscribed")
            total = MESSAGES * SAMPLES_PER_MESSAGE

            async def read_all() -> list[int]:
                seqs: list[int] = []
                while len(seqs) < total:
                    seqs += [s["seq"] for s in (await reading.receive_type("data"))["samples"]]
                return seqs

            reader = asyncio.create_task(read_all())
            for index in range(MESSAGES):
                await agent.send(batch(index * SAMPLES_PER_MESSAGE))
            # The reading client is not held back by the stalled one.
            assert await asyncio.wait_for(reader, 4 * DEADLINE_S) == list(range(total))

            # Now the stalled client reads what the hub kept for it.
            frames, seqs, missed = 0, [], []
            while not seqs or seqs[-1] != total - 1:
                msg = await stalled.ws.receive(timeout=DEADLINE_S)
                assert msg.type is aiohttp.WSMsgType.TEXT
                message = msgspec.json.decode(msg.data)
                if message["type"] == "data":
                    frames += 1
                    seqs += [s["seq"] for s in message["samples"]]
                elif message["type"] == "missed":
                    missed.append(message)
            assert seqs == sorted(set(seqs)), "repeated or out of order"
            assert len(seqs) < total, "nothing was dropped: the test did not stall the client"
            assert frames < MESSAGES, "queued batches were not coalesced into fewer frames"
            # Issue 9: it was cut off without a word. Now it is told exactly
            # which seqs it missed: with what it got, every seq once.
            told = [
                seq
                for m in missed
                for seq in range(m["first_seq"], m["last_seq"] + 1)
                if m["instrument"] == "balance" and m["run"] == "r1"
            ]
            assert sum(m["count"] for m in missed) == len(told)
            assert sorted(told + seqs) == list(range(total)), "a miss not told, or told twice"
            stalled_peer = next(p for p in running.hub.peers if p.name.endswith("/stalled"))
            assert stalled_peer.missed > 0
    finally:
        await running.stop()


async def test_a_client_that_must_not_skip_is_closed_with_4005_instead(tmp_path: Path) -> None:
    config = HubConfig(port=0, data_dir=tmp_path / "h", limits=Limits(client_queue_frames=8))
    running = await start_hub(config)
    try:
        async with (
            raw_agent(running.url, "pi", [instrument("balance")]) as agent,
            raw_client(running.url, "logger") as logger,
        ):
            sock = logger.ws.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            await logger.send(
                {"type": "subscribe", "id": "s", "patterns": ["balance"], "overflow": "disconnect"}
            )
            await logger.receive_type("subscribed")
            for index in range(MESSAGES):
                await agent.send(batch(index * SAMPLES_PER_MESSAGE))
                if logger.ws.closed:
                    break
            while True:  # what was sent before the close, then the close itself
                msg = await logger.ws.receive(timeout=DEADLINE_S)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                assert msgspec.json.decode(msg.data)["type"] != "missed"
            assert msg.type is aiohttp.WSMsgType.CLOSE
            assert logger.ws.close_code == 4005
            assert "fell behind" in str(msg.extra)
    finally:
        await running.stop()
