"""NATS restarted under load: two `kmz hub` processes reconnect, and nothing acknowledged is lost.

A private `nats-server` of this test (JetStream off, on a free port of
127.0.0.1: the machine's shared server on 4222 serves other tests) carries
the bus of hubs A and B, which share one PostgreSQL log. An agent streams
simulated thermometers to hub A while a client of hub B watches them. The
NATS server is killed with SIGKILL under load; hub B sees hub A fall silent
(its instruments offline), the agent keeps streaming to hub A, which keeps
logging and acknowledging. The server is started again on the same port:
both hubs reconnect, hub B's client receives data again, and the shared log
holds every sample exactly once, in order (the delivery checker).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.client import Client
from kleinmaelzung.protocol import Sample, Status

from ..hub.log_backends import postgres_url
from .delivery_check import check_delivery, read_spool
from .processes import (
    Process,
    free_port,
    get_json,
    read_json_file,
    terminate,
    thermometer_ids,
    wait_until,
    wait_until_async,
    write_streaming_config,
)
from .test_scaleout import NATS_SERVER
from .test_scaleout_failover import _hub, read_shared_log, shared_log

__all__ = ["postgres_url", "shared_log"]  # fixtures, imported to be found

pytestmark = pytest.mark.slow

DEADLINE_S = 20.0
INSTRUMENTS = 4
RATE_HZ = 25.0
#: Samples B's client must have seen before NATS is killed, and after it is back.
SEEN = 150


class PrivateNats:
    """A `nats-server` process of one test, on a port of its own; restartable there."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._log_dir = log_dir
        self.starts = 0
        self.popen: subprocess.Popen[bytes] | None = None

    def _answers(self) -> bool | None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return None

    def start(self) -> None:
        """Start it (no JetStream: the hubs use core NATS), back once it takes connections."""
        self.starts += 1
        log = self._log_dir / f"nats-{self.starts}.log"
        self.popen = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-l", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._answers, f"nats-server on {self.port}", DEADLINE_S)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, connections cut."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=DEADLINE_S)

    def stop(self) -> None:
        """Stop it at teardown."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    """A NATS server for this test alone."""
    if not Path(NATS_SERVER).exists():
        pytest.skip(f"nats-server is not installed ({NATS_SERVER}): apt-get install nats-server")
    server = PrivateNats(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_nats_restarted_under_load_the_hubs_reconnect_and_nothing_acknowledged_is_lost(
    tmp_path: Path, private_nats: PrivateNats, shared_log: tuple[str, str]
) -> None:
    log_url, _ = shared_log
    nats = private_nats
    prefix = f"kmztest.{uuid.uuid4().hex}"
    ids = thermometer_ids(INSTRUMENTS)
    paths_file = tmp_path / "ptys.json"
    sim = Process("sim", ["sim", "--seed", "13", "--paths-file", str(paths_file), *ids], tmp_path)
    processes = [sim]

    def outputs() -> str:
        return "\n".join(f"--- {p.name}:\n{p.output()[-3000:]}" for p in processes)

    try:
        paths = await wait_until_async(
            lambda: read_json_file(paths_file), "simulator ptys", DEADLINE_S, sim
        )
        a, a_url = _hub(tmp_path, "hub-a", nats.url, prefix, log_url)
        b, b_url = _hub(tmp_path, "hub-b", nats.url, prefix, log_url)
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
            agent_id="nats-restart-pi",
        )
        agent = Process("agent", ["agent", str(config)], tmp_path)
        processes.append(agent)

        async with Client(b_url, name="nats-restart-watch") as client:
            events = client.subscribe("therm-*", status=True)
            await events
            seen = 0
            async with asyncio.timeout(DEADLINE_S):
                async for event in events:
                    seen += isinstance(event, Sample)
                    if seen >= SEEN:
                        break

            # NATS goes under load: hub B hears nothing more of hub A, and
            # says so once A's presence runs out (3.5 s).
            nats.kill()
            killed = time.monotonic()
            offline: set[str] = set()
            async with asyncio.timeout(DEADLINE_S):
                async for event in events:
                    if isinstance(event, Status) and event.state == "offline":
                        offline.add(event.instrument)
                        if offline == set(ids):
                            break
            silent_s = time.monotonic() - killed
            # Meanwhile hub A still takes the agent's samples, logs and
            # acknowledges them: its own instrument list has them online.
            listed = {r["id"]: r for r in get_json(a_url + "/api/instruments") or []}
            assert all(listed[i]["state"] == "online" for i in ids), listed

            await asyncio.to_thread(nats.start)  # the same port: the hubs' one URL
            restarted, restarted_wall = time.monotonic(), time.time()
            online: dict[str, float] = {}
            streaming: dict[str, float] = {}
            async with asyncio.timeout(DEADLINE_S):
                async for event in events:
                    now = time.monotonic() - restarted
                    if isinstance(event, Status) and event.state == "online":
                        online.setdefault(event.instrument, now)
                    elif isinstance(event, Sample) and event.ts > restarted_wall:
                        streaming.setdefault(event.instrument, now)
                    # Samples may come before A's next presence says online (1 s).
                    if len(streaming) == len(ids) == len(online):
                        break
            listed = {r["id"]: r for r in get_json(b_url + "/api/instruments") or []}
            assert all(listed[i]["state"] == "online" for i in ids), listed

            more = 0
            async with asyncio.timeout(DEADLINE_S):
                async for event in events:
                    more += isinstance(event, Sample)
                    if more >= SEEN:
                        break
            assert await asyncio.to_thread(terminate, agent) == 0, outputs()
            await events.close()
        for hub in (a, b):
            assert await asyncio.to_thread(hub.interrupt) == 0, outputs()
            assert "bus reconnected" in hub.output(), outputs()

        log = await read_shared_log(log_url)
        verdicts = check_delivery(log, spool=read_spool(spool))
        for bad in ("lost", "duplicated", "out_of_order", "dropped"):
            assert verdicts.count(bad) == 0, f"{bad}:\n{verdicts.explain()}\n{outputs()}"
        figures: dict[str, Any] = {
            **verdicts.figures(),
            # NATS killed -> hub B shows A's instruments offline.
            "silent_s": round(silent_s, 3),
            # NATS started again -> every instrument online, then streaming, at B.
            "online_again_s": round(max(online.values(), default=-1.0), 3),
            "streaming_again_s": round(max(streaming.values()), 3),
            "instruments": INSTRUMENTS,
            "rate_hz": RATE_HZ,
        }
        print(json.dumps(figures))
        assert verdicts.count("ok") > 2 * SEEN
        assert max(streaming.values()) < 5.0, figures
    finally:
        for proc in reversed(processes):
            proc.stop()
