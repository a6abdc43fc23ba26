"""The floor of the hub's stack: aiohttp relaying the benchmark's frames, and nothing else.

    python benchmarks/floor_relay.py PORT

No log, no validation, no auth, no sequence checks, no acks: an agent's
data frame is sent as it came to every subscribed client, in the same
round-coalesced way the hub writes (one system call per client per loop
iteration). It speaks just enough of the hub's protocol for `loadgen.py`
(`agent_hello` -> `welcome`, `subscribe` -> `subscribed`). What this costs
per delivery is what any hub built on aiohttp and asyncio pays before doing
any of its own work; `run.py` runs it beside the hub (server `aiohttp-floor`)
so that the hub's figures can be split into the stack's share and its own.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import WSMsgType, web

_clients: dict[web.WebSocketResponse, list[bytes]] = {}


def _flush(ws: web.WebSocketResponse) -> None:
    frames = _clients.get(ws)
    if not frames:
        return
    _clients[ws] = []
    # aiohttp's writer frames each message itself; joining needs the raw
    # transport, which is what the hub's own peers do (`hub.peers`).
    transport = ws._writer.transport if ws._writer is not None else None
    if transport is None or transport.is_closing():
        return
    transport.write(b"".join(frames))


def _frame(payload: bytes) -> bytes:
    """A server-to-client text frame (unmasked), as `hub.peers.wire_frame` builds it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


async def agent(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    loop = asyncio.get_running_loop()
    async for message in ws:
        if message.type is not WSMsgType.TEXT:
            break
        data: str = message.data
        if data.startswith('{"type":"data"'):
            wire = _frame(data.encode())
            for client, frames in _clients.items():
                if not frames:
                    loop.call_soon(_flush, client)
                frames.append(wire)
        elif '"agent_hello"' in data:
            await ws.send_str('{"type":"welcome"}')
    return ws


async def client(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    try:
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                break
            if '"subscribe"' in message.data:
                _clients[ws] = []
                await ws.send_str('{"type":"subscribed","id":"1"}')
    finally:
        _clients.pop(ws, None)
    return ws


def main() -> None:
    app = web.Application()
    app.router.add_get("/ws/agent", agent)
    app.router.add_get("/ws/client", client)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
