"""Two `kmz hub` processes on one NATS bus and one PostgreSQL log; an agent given both fails over.

Separate processes: `kmz sim` thermometers on real ptys, hubs A and B (both
opening a new schema of the real PostgreSQL server at once), and an agent
whose config names both hubs. The agent streams to hub A while a client of
hub B watches; hub A is killed with SIGKILL under load. The agent moves to
hub B, the client there sees the instruments' data again, and the shared log
holds every sample exactly once, in order (the delivery checker), though two
hubs and two writer processes wrote it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from kleinmaelzung.client import Client
from kleinmaelzung.protocol import Sample, Status

from ..hub.log_backends import postgres_url, run_aside
from .delivery_check import LOG_ROWS, HubLog, check_delivery, hub_log_of, read_spool
from .processes import (
    Process,
    free_port,
    get_json,
    read_json_file,
    terminate,
    thermometer_ids,
    wait_until_async,
    write_streaming_config,
)
from .test_scaleout import nats_server

__all__ = ["nats_server", "postgres_url"]  # fixtures, imported to be found

pytestmark = pytest.mark.slow

DEADLINE_S = 20.0
INSTRUMENTS = 4
RATE_HZ = 25.0
#: Samples B's client must have seen before A is killed: A is under load then.
BEFORE_KILL = 150


@pytest.fixture
def shared_log(postgres_url: str) -> Iterator[tuple[str, str]]:
    """(the hubs' log URL, the server URL) for a schema of this test, dropped afterwards."""
    schema = f"kmz_scaleout_{uuid.uuid4().hex[:8]}"
    try:
        yield f"{postgres_url}?schema={schema}", postgres_url
    finally:

        async def drop() -> None:
            connection = await asyncpg.connect(postgres_url, timeout=5)
            try:
                await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await connection.close()

        run_aside(drop)


async def read_shared_log(log_url: str) -> HubLog:
    """The checker's view of the log all hubs wrote."""
    server, schema = log_url.split("?schema=")
    connection = await asyncpg.connect(server, server_settings={"search_path": f'"{schema}"'})
    try:
        return hub_log_of([tuple(row) for row in await connection.fetch(LOG_ROWS)])  # type: ignore[misc]
    finally:
        await connection.close()


def _hub(tmp: Path, name: str, bus: str, prefix: str, log_url: str) -> tuple[Process, str]:
    port = free_port()
    config = tmp / f"{name}.toml"
    config.write_text(
        f'name = "{name}"\nbus = "{bus}"\nbus_prefix = "{prefix}"\nlog_url = "{log_url}"\n'
    )
    args = ["hub", "--config", str(config), "--port", str(port), "--data", str(tmp / name)]
    return Process(name, args, tmp), f"http://127.0.0.1:{port}"


async def test_an_agent_fails_over_and_the_shared_log_holds_every_sample_once(
    tmp_path: Path, nats_server: str, shared_log: tuple[str, str]
) -> None:
    log_url, _ = shared_log
    prefix = f"kmztest.{uuid.uuid4().hex}"
    ids = thermometer_ids(INSTRUMENTS)
    paths_file = tmp_path / "ptys.json"
    sim = Process("sim", ["sim", "--seed", "11", "--paths-file", str(paths_file), *ids], tmp_path)
    processes = [sim]

    def outputs() -> str:
        return "\n".join(f"--- {p.name}:\n{p.output()[-3000:]}" for p in processes)

    try:
        paths = await wait_until_async(
            lambda: read_json_file(paths_file), "simulator ptys", DEADLINE_S, sim
        )
        # Both hubs open the new schema at once: the migrations' lock keeps
        # them from creating it (and this month's partitions) twice.
        a, a_url = _hub(tmp_path, "hub-a", nats_server, prefix, log_url)
        b, b_url = _hub(tmp_path, "hub-b", nats_server, prefix, log_url)
        processes += [a, b]
        for hub, url in ((a, a_url), (b, b_url)):
            await wait_until_async(
                lambda url=url: get_json(url + "/api/health"), f"{hub.name} health", DEADLINE_S, hub
            )
        spool = tmp_path / "agent-spool.sqlite"
        config = write_streaming_config(
            tmp_path / "agent.toml",
            a_url,
            paths,
            poll_interval_s=1 / RATE_HZ,
            spool_path=spool,
            agent_id="failover-pi",
        )
        config.write_text(
            config.read_text().replace(f'hub = "{a_url}"', f'hub = ["{a_url}", "{b_url}"]')
        )
        agent = Process("agent", ["agent", str(config)], tmp_path)
        processes.append(agent)

        async with Client(b_url, name="failover-watch") as client:
            events = client.subscribe("therm-*", status=True)
            await events
            seen = 0
            async with asyncio.timeout(DEADLINE_S):
                async for event in events:
                    seen += isinstance(event, Sample)
                    if seen >= BEFORE_KILL:
                        break

            await asyncio.to_thread(a.kill)  # SIGKILL, samples in flight
            killed, killed_wall = time.monotonic(), time.time()
            offline: set[str] = set()
            streaming: dict[str, float] = {}
            async with asyncio.timeout(DEADLINE_S):
                async for event in events:
                    now = time.monotonic() - killed
                    if isinstance(event, Status) and event.state == "offline":
                        offline.add(event.instrument)
                    elif isinstance(event, Sample) and event.ts > killed_wall:
                        streaming.setdefault(event.instrument, now)
                    if len(streaming) == len(ids):
                        break
            listed = {r["id"]: r for r in get_json(b_url + "/api/instruments") or []}
            assert all(listed[i]["state"] == "online" for i in ids), listed

            # A while through hub B, then the agent stops; B logs what it took.
            more = 0
            async with asyncio.timeout(DEADLINE_S):
                async for event in events:
                    more += isinstance(event, Sample)
                    if more >= BEFORE_KILL:
                        break
            assert await asyncio.to_thread(terminate, agent) == 0, outputs()
            await events.close()
        assert await asyncio.to_thread(b.interrupt) == 0, outputs()

        log = await read_shared_log(log_url)
        held = read_spool(spool)
        verdicts = check_delivery(log, spool=held)
        for bad in ("lost", "duplicated", "out_of_order", "dropped"):
            assert verdicts.count(bad) == 0, f"{bad}:\n{verdicts.explain()}\n{outputs()}"
        runs = {frame.run for frame in log.frames}
        assert len(runs) >= 2, runs  # a connection to each hub
        figures: dict[str, Any] = {
            **verdicts.figures(),
            # Hub A killed -> every instrument's samples arriving again at
            # hub B's client; B never showed them offline if the agent was
            # back before A's presence ran out (3.5 s).
            "failover_s": round(max(streaming.values()), 3),
            "shown_offline": sorted(offline),
            "instruments": INSTRUMENTS,
            "rate_hz": RATE_HZ,
        }
        print(json.dumps(figures))
        assert verdicts.count("ok") > 2 * BEFORE_KILL
        assert max(streaming.values()) < 5.0, figures
    finally:
        for proc in reversed(processes):
            proc.stop()
