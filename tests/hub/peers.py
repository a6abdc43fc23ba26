"""Raw protocol peers for hub tests: real WebSockets speaking JSON, no client library."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec

from kleinmaelzung.protocol import PROTOCOL_VERSION

DEADLINE_S = 5.0


class RawPeer:
    """A WebSocket to the hub that sends and receives JSON objects."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any] | bytes | str) -> None:
        """Send a JSON object, or raw text/bytes as a text frame."""
        if isinstance(message, dict):
            await self.ws.send_str(msgspec.json.encode(message).decode())
        elif isinstance(message, bytes):
            await self.ws.send_bytes(message)
        else:
            await self.ws.send_str(message)

    async def receive(self, timeout: float = DEADLINE_S) -> dict[str, Any]:
        """The next JSON message, within a deadline."""
        msg = await self.ws.receive(timeout=timeout)
        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            raise ConnectionError(f"expected a message, got {msg.type!r} {msg.data!r}")
        result: dict[str, Any] = msgspec.json.decode(msg.data)
        return result

    async def receive_type(self, type_: str, timeout: float = DEADLINE_S) -> dict[str, Any]:
        """Skip messages until one of `type_` arrives, within a deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self.receive(timeout=max(0.01, deadline - loop.time()))
            if message["type"] == type_:
                return message


def instrument(id_: str, commands: tuple[str, ...] = ("tare",)) -> dict[str, Any]:
    """An instrument announcement as an agent sends it."""
    return {
        "id": id_,
        "kind": "balance",
        "channels": [{"name": "mass", "unit": "g"}],
        "commands": [{"name": c, "description": f"{c} it"} for c in commands],
    }


def data(instrument_id: str, *seqs: int) -> dict[str, object]:
    """A data message with one balance sample per seq; mass equals seq."""
    return {
        "type": "data",
        "samples": [
            {"instrument": instrument_id, "seq": s, "ts": 1.0 + s, "values": {"mass": float(s)}}
            for s in seqs
        ],
    }


@asynccontextmanager
async def raw_peer(url: str, path: str) -> AsyncIterator[RawPeer]:
    """Open a raw WebSocket to `path` on the hub at `url`."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url.replace("http", "ws", 1) + path) as ws,
    ):
        yield RawPeer(ws)


@asynccontextmanager
async def raw_agent(
    url: str,
    agent_id: str,
    instruments: list[dict[str, Any]],
    run: str = "r1",
    token_: str | None = None,
) -> AsyncIterator[RawPeer]:
    """A raw agent that has completed its handshake."""
    async with raw_peer(url, "/ws/agent") as peer:
        await peer.send(
            {
                "type": "agent_hello",
                "protocol": PROTOCOL_VERSION,
                "agent_id": agent_id,
                "instruments": instruments,
                "run": run,
                "token": token_,
            }
        )
        welcome = await peer.receive()
        assert welcome["type"] == "welcome", welcome
        yield peer


@asynccontextmanager
async def raw_client(url: str, name: str = "test") -> AsyncIterator[RawPeer]:
    """A raw client that has completed its handshake."""
    async with raw_peer(url, "/ws/client") as peer:
        await peer.send({"type": "client_hello", "protocol": PROTOCOL_VERSION, "name": name})
        welcome = await peer.receive()
        assert welcome["type"] == "welcome", welcome
        yield peer
