"""A log the hub cannot read: resent samples are neither logged twice nor stranded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from kleinmaelzung.hub import HubConfig, start_hub
from kleinmaelzung.hub.store.postgres import PostgresStore

from .log_backends import LogPlace, postgres_place, postgres_url
from .peers import DEADLINE_S, instrument, raw_agent
from .test_log_backends import Cable

__all__ = ["postgres_place", "postgres_url"]


def frame(run: str, *seqs: int) -> dict[str, object]:
    samples = [{"instrument": "balance", "seq": s, "ts": time.time(), "values": {}} for s in seqs]
    return {"type": "data", "samples": samples, "run": run}


async def test_a_run_the_hub_cannot_look_up_makes_the_agent_reconnect_and_resend(
    postgres_place: LogPlace, tmp_path: Path
) -> None:
    # The log's server went away: the hub cannot tell which samples of a run
    # it logged before. It used to fail the frame inside the handler.
    server = urlsplit(postgres_place.url)
    cable = Cable((server.hostname or "127.0.0.1", server.port or 5432))
    await cable.plug_in()
    user = server.netloc.rpartition("@")[0]
    relay = f"{user}@127.0.0.1:{cable.port}" if user else f"127.0.0.1:{cable.port}"
    store = PostgresStore(postgres_place.url.replace(server.netloc, relay))
    running = await start_hub(HubConfig(port=0, data_dir=tmp_path / "h"), store=store)
    try:
        async with raw_agent(running.url, "pi", [instrument("balance")], run="p") as agent:
            await agent.send(frame("p.1", 0, 1, 2))
            assert (await agent.receive_type("ack"))["seqs"] == {"balance": 2}
            await cable.pull_out()
            await agent.send(frame("p.0", 0, 1))  # a backlog run, never seen by this hub
            closed = await agent.ws.receive(timeout=DEADLINE_S)
            assert closed.type is aiohttp.WSMsgType.CLOSE and agent.ws.close_code == 1001
        await cable.plug_in()
        async with raw_agent(running.url, "pi", [instrument("balance")], run="p") as agent:
            await agent.send(frame("p.0", 0, 1))
            ack = await agent.receive_type("ack")
            assert (ack["run"], ack["seqs"]) == ("p.0", {"balance": 1})
        await asyncio.wait_for(running.hub.store.flush(), DEADLINE_S)
        logged = await running.hub.store.query_samples("balance", 0.0, time.time() + 60)
        assert sorted((s.run, s.seq) for s in logged) == [
            ("p.0", 0),
            ("p.0", 1),
            ("p.1", 0),
            ("p.1", 1),
            ("p.1", 2),
        ]
    finally:
        await running.stop()
