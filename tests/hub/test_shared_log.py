"""Hubs sharing one PostgreSQL log (issue 16): opening it at once, and de-duplication across them.

Real PostgreSQL, a schema of each test's own (`log_backends`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

from kleinmaelzung.hub import HubConfig, RunningHub, start_hub
from kleinmaelzung.hub.store.postgres import PostgresBackend

from .log_backends import LogPlace, postgres_place, postgres_url
from .peers import RawPeer, data, instrument, raw_agent

__all__ = ["postgres_place", "postgres_url"]  # fixtures, imported to be found

HUBS = 3


def _open(url: str) -> str:
    backend = PostgresBackend(url)
    try:
        backend.open()
        return "ok"
    except Exception as exc:  # the test shows what each one said
        return f"{type(exc).__name__}: {exc}"
    finally:
        backend.close()


def test_hubs_opening_a_new_log_at_once_all_open_it(postgres_place: LogPlace) -> None:
    # Before the migrations' lock covered the schema and the partitions, one
    # or two of three failed in 10 of 10 tries (pg_namespace unique key,
    # "relation sample_2026_11 already exists").
    with concurrent.futures.ThreadPoolExecutor(HUBS) as pool:
        assert list(pool.map(_open, [postgres_place.url] * HUBS)) == ["ok"] * HUBS


async def _acked(agent: RawPeer, run: str, newest: int) -> None:
    while True:
        ack = await agent.receive_type("ack")
        if ack.get("run") == run and ack["seqs"].get("balance", -1) >= newest:
            return


async def _send(hub: RunningHub, run: str, seqs: range) -> None:
    """Connect as the agent, send `seqs` of `run`, wait for the ack, disconnect."""
    async with raw_agent(hub.url, "pi-1", [instrument("balance")], run="live") as agent:
        await agent.send({**data("balance", *seqs), "run": run, "backlog": True})
        await asyncio.wait_for(_acked(agent, run, seqs[-1]), 10)


async def test_an_agent_back_on_a_hub_is_not_logged_twice_what_another_hub_logged(
    tmp_path: Path, postgres_place: LogPlace
) -> None:
    def config(name: str) -> HubConfig:
        return HubConfig(
            host="127.0.0.1",
            port=0,
            data_dir=tmp_path / name,
            name=name,
            log_url=postgres_place.url,
        )

    first = await start_hub(config("a"))
    second = await start_hub(config("b"))
    try:
        await _send(first, "old.1", range(0, 3))
        # The agent fails over, and resends to B what A did not acknowledge.
        await _send(second, "old.1", range(0, 6))
        # ... and back to A, resending what B did not acknowledge. A last saw
        # seq 2 of this run: without looking at the log again it took 3 to 5
        # a second time.
        await _send(first, "old.1", range(3, 8))
    finally:
        await second.stop()
        await first.stop()
    rows: list[Any] = await postgres_place.sql(
        "SELECT seq, count(*) FROM sample WHERE run = 'old.1' GROUP BY seq ORDER BY seq"
    )
    assert rows == [(seq, 1) for seq in range(8)]
