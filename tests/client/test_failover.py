"""A client given several hubs: it connects to the first that answers, and moves on when it dies."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from kleinmaelzung.client import Client, HubUnreachable
from kleinmaelzung.hub import HubConfig, start_hub
from kleinmaelzung.protocol import Timeouts

DEADLINE_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_client_connects_to_the_first_hub_that_answers_and_moves_on(
    tmp_path: Path,
) -> None:
    first = await start_hub(
        HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "1", name="one")
    )
    second = await start_hub(
        HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "2", name="two")
    )
    dead = f"http://127.0.0.1:{free_port()}"
    try:
        urls = [dead, first.url, second.url]
        timeouts = Timeouts(reconnect_max_s=0.5)
        async with Client(urls, name="failover", reconnect=True, timeouts=timeouts) as client:
            assert client.urls == urls and client.url == first.url
            assert await client.instruments() == []
            await first.stop()
            async with asyncio.timeout(DEADLINE_S):
                # Polling the client's state: reconnecting has no event to wait on.
                while not (client.connected and client.url == second.url):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert await client.instruments() == []
    finally:
        await second.stop()
        await first.stop()


async def test_no_hub_answering_raises_the_last_ones_failure() -> None:
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    with pytest.raises(HubUnreachable) as info:
        await asyncio.wait_for(Client(dead).connect(), DEADLINE_S)
    assert dead[1].removeprefix("http://") in str(info.value)
    with pytest.raises(ValueError, match="at least one hub URL"):
        Client([])
