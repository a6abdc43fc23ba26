"""A client that floods the hub with messages, as a process of its own (so that its loop is not
the measuring client's). Prints what it saw as JSON when done.

    python -m tests.e2e.flood URL TOKEN --rate 10000 --seconds 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from typing import Any

import aiohttp

from kleinmaelzung.protocol import PROTOCOL_VERSION

BATCH = 50


async def flood(url: str, token: str, rate: float, seconds: float) -> dict[str, Any]:
    """Send `rate` list_instruments per second for `seconds`, reconnecting when closed."""
    seen: dict[str, Any] = {"sent": 0, "answers": 0, "errors": Counter(), "closes": Counter()}
    loop = asyncio.get_running_loop()
    begun = loop.time()
    end = begun + seconds
    hello = {"type": "client_hello", "protocol": PROTOCOL_VERSION, "token": token, "name": "flood"}
    frame = json.dumps({"type": "list_instruments", "id": "f"})
    async with aiohttp.ClientSession() as session:
        while loop.time() < end:
            ws = await session.ws_connect(url.replace("http", "ws", 1) + "/ws/client")
            await ws.send_str(json.dumps(hello))

            async def read(ws: aiohttp.ClientWebSocketResponse = ws) -> None:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        answer = json.loads(msg.data)
                        if answer["type"] == "error":
                            seen["errors"][answer["code"]] += 1
                        elif answer["type"] == "instrument_list":
                            seen["answers"] += 1
                seen["closes"][ws.close_code or 1006] += 1

            reader = asyncio.create_task(read())
            try:
                while loop.time() < end and not ws.closed:
                    due = int((loop.time() - begun) * rate) + BATCH
                    while seen["sent"] < due and not ws.closed:
                        await ws.send_str(frame)
                        seen["sent"] += 1
                    await asyncio.sleep(BATCH / rate)  # pacing the flood, not synchronising
            except (ConnectionError, aiohttp.ClientError):
                pass
            await ws.close()
            await reader
    seen["errors"] = dict(seen["errors"])
    seen["closes"] = {str(k): v for k, v in seen["closes"].items()}
    seen["rate_sent"] = seen["sent"] / seconds
    return seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    started = time.monotonic()
    seen = asyncio.run(flood(args.url, args.token, args.rate, args.seconds))
    seen["wall_s"] = round(time.monotonic() - started, 2)
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
