"""A raw agent for client tests: announces instruments, publishes samples, answers commands.

It speaks the wire protocol over a real WebSocket to a real hub (see
`tests/hub/peers.py`), so the client is tested against the hub, not a mock.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..hub.peers import RawPeer, instrument, raw_agent, raw_client

__all__ = [
    "RawPeer",
    "answer_commands",
    "instrument",
    "publish",
    "publish_until",
    "raw_agent",
    "raw_client",
]


async def publish(agent: RawPeer, instrument_id: str, *seqs: int) -> None:
    """Send one data message with a sample per sequence number; mass equals seq."""
    await agent.send(
        {
            "type": "data",
            "samples": [
                {
                    "instrument": instrument_id,
                    "seq": s,
                    "ts": 100.0 + s,
                    "values": {"mass": float(s)},
                }
                for s in seqs
            ],
        }
    )


async def publish_until(
    agent: RawPeer, instrument_id: str, done: asyncio.Future[Any], deadline_s: float = 20.0
) -> int:
    """Publish a sample every 50 ms, as an instrument would, until `done`; return the count."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    seq = 0
    while not done.done():
        if loop.time() > deadline:
            raise TimeoutError(f"still waiting after {seq} samples")
        await publish(agent, instrument_id, seq)
        seq += 1
        await asyncio.wait([done], timeout=0.05)
    return seq


async def answer_commands(agent: RawPeer) -> None:
    """Play the instrument: `tare` succeeds, `zero` fails, `wait` is never answered."""
    while True:
        command = await agent.receive_type("command", timeout=60)
        if command["name"] == "wait":
            continue
        if command["name"] == "tare":
            reply = {"type": "reply", "id": command["id"], "ok": True, "result": {"tare": 1.5}}
        else:
            reply = {
                "type": "reply",
                "id": command["id"],
                "ok": False,
                "error": {"code": "instrument_error", "message": "not stable"},
            }
        await agent.send(reply)
