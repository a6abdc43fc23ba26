"""Sockets that open and then say nothing, as a process of its own (so that the hub closing
them is not work on the measuring client's loop).

    python -m tests.e2e.silent URL COUNT

Half are raw TCP connections that never send a byte, half upgrade to a WebSocket and never
send a hello. Prints one JSON line once all are open ({"open_s": ...}), and another once the
hub has closed them all: seconds from the first opening to each close, and the close codes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
from typing import Any

import aiohttp


async def hold(url: str, count: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    host, port = url.removeprefix("http://").split(":")
    # No cap on connections (aiohttp's default is 100 at once).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        opened = loop.time()
        raw = await asyncio.gather(
            *(asyncio.open_connection(host, int(port)) for _ in range(count // 2))
        )
        upgraded = await asyncio.gather(
            *(
                session.ws_connect(f"ws://{host}:{port}/ws/client", autoping=False)
                for _ in range(count - count // 2)
            )
        )
        print(json.dumps({"open_s": loop.time() - opened}), flush=True)

        async def raw_closed(reader: asyncio.StreamReader) -> float:
            await reader.read()
            return loop.time() - opened

        async def ws_closed(ws: aiohttp.ClientWebSocketResponse) -> float:
            while (await ws.receive()).type not in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                pass
            return loop.time() - opened

        closed_after = await asyncio.gather(
            *(raw_closed(r) for r, _ in raw), *(ws_closed(ws) for ws in upgraded)
        )
        codes = sorted({ws.close_code or 1006 for ws in upgraded})
        for _, writer in raw:
            writer.close()
        for ws in upgraded:
            await ws.close()
    return {"closed_after": max(closed_after), "close_codes": codes}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * args.count + 64 <= hard or hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2 * args.count + 64), hard))
    print(json.dumps(asyncio.run(hold(args.url, args.count))), flush=True)


if __name__ == "__main__":
    main()
