"""Start and stop the servers under test: our hub, Mosquitto-WS and NATS-WS, all on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Server:
    """A running server process and how to reach it."""

    name: str
    protocol: str
    url: str
    process: subprocess.Popen[bytes]
    http: str | None = None
    #: The hub's traffic log: a SQLite file, or a PostgreSQL URL (with ?schema=).
    log: str | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def health(self) -> dict[str, object] | None:
        """The hub's /api/health, or None for other servers."""
        if self.http is None:
            return None
        with urllib.request.urlopen(self.http + "/api/health", timeout=5) as response:
            result: dict[str, object] = json.loads(response.read())
            return result

    def log_rows(self, start: float, end: float) -> tuple[int, int]:
        """The hub's log: traffic rows and sample rows received in [start, end)."""
        assert self.log is not None
        if not self.log.startswith("postgresql"):
            import sqlite3

            with contextlib.closing(sqlite3.connect(self.log)) as db:
                ((traffic,),) = db.execute(
                    "SELECT count(*) FROM traffic WHERE ts >= ? AND ts < ?", (start, end)
                ).fetchall()
                ((samples,),) = db.execute(
                    "SELECT count(*) FROM sample WHERE received >= ? AND received < ?",
                    (start, end),
                ).fetchall()
            return int(traffic), int(samples)
        url, schema = self.log.split("?schema=")
        counts = _postgres(
            url,
            f'SELECT (SELECT count(*) FROM "{schema}".traffic WHERE ts >= to_timestamp($1)'
            f' AND ts < to_timestamp($2)), (SELECT count(*) FROM "{schema}".sample'
            " WHERE received >= to_timestamp($1) AND received < to_timestamp($2))",
            start,
            end,
        )
        return int(counts[0]), int(counts[1])


def _postgres(url: str, statement: str, *args: object) -> tuple[object, ...]:
    """Run one statement on a PostgreSQL server; its first row."""
    import asyncio

    import asyncpg

    async def run() -> tuple[object, ...]:
        connection = await asyncpg.connect(url, timeout=10)
        try:
            row = await connection.fetchrow(statement, *args)
            return tuple(row) if row is not None else ()
        finally:
            await connection.close()

    return asyncio.run(run())


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _raise_file_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Return once `port` accepts connections; raise if `process` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def available(name: str) -> bool:
    """Whether the server can be started here."""
    if name == "hub-xhub":
        return shutil.which("nats-server") is not None
    return (
        name.startswith("hub")
        or name == "aiohttp-floor"
        or shutil.which(_BINARIES[name]) is not None
    )


_BINARIES = {"mosquitto": "mosquitto", "nats": "nats-server"}


_THREAD_HUB = """
import asyncio, sys
from pathlib import Path
from kleinmaelzung.hub import HubConfig, run_hub
port, folder, *log = sys.argv[1:]
sys.setswitchinterval(0.0005)
config = HubConfig(port=int(port), data_dir=Path(folder), log_url=log[0] if log else None)
asyncio.run(run_hub(config, writer_process=False))
"""


@contextlib.contextmanager
def start(
    name: str, cpus: str, hub_log: str | None = None, bus: tuple[str, str] | None = None
) -> Iterator[Server]:
    """Start one server pinned to `cpus` (taskset list, '' for none); stop it afterwards.

    Pinned with its whole process tree: the hub's log writer inherits the
    affinity, so the hub and its writer share the one CPU a peer gets.
    `hub_log` is a PostgreSQL URL for the hub's traffic log (a fresh schema,
    dropped afterwards); None for SQLite in the hub's data folder. `bus`
    (NATS URL, subject prefix) puts a hub on a bus.
    """
    pin = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
    port = free_port()
    schema = None
    with tempfile.TemporaryDirectory(prefix=f"kmz-bench-{name}-") as folder:
        http = log = None
        if name.startswith("hub"):
            command = [
                sys.executable,
                "-m",
                "kleinmaelzung.cli",
                "hub",
                "--port",
                str(port),
                "--data",
                folder,
            ]
            if name == "hub-thread":
                # The hub as before issue 10's writer process: the log's
                # writer a thread in the hub's process, for before/after
                # figures from the same run.
                command = [sys.executable, "-c", _THREAD_HUB, str(port), folder]
            protocol, http = "hub", f"http://127.0.0.1:{port}"
            log = str(Path(folder) / "traffic.sqlite3")
            if hub_log:
                schema = f"kmz_bench_{secrets.token_hex(4)}"
                log = f"{hub_log}?schema={schema}"
                command += ["--log", log] if name != "hub-thread" else [log]
        elif name == "aiohttp-floor":
            # The hub's stack with none of the hub's work: `floor_relay`.
            command = [sys.executable, str(Path(__file__).parent / "floor_relay.py"), str(port)]
            protocol = "hub"
        elif name == "mosquitto":
            config = Path(folder) / "mosquitto.conf"
            # Debian's mosquitto 2.0.11 will not start with only a WebSocket
            # listener, hence the plain MQTT one; socket_domain ipv4 makes
            # libwebsockets bind the IPv4 loopback address.
            config.write_text(
                "per_listener_settings false\nallow_anonymous true\npersistence false\n"
                f"log_dest none\nlistener {free_port()} 127.0.0.1\n"
                f"listener {port} 127.0.0.1\nsocket_domain ipv4\nprotocol websockets\n"
            )
            command, protocol = ["mosquitto", "-c", str(config)], "mqtt"
        elif name == "nats":
            config = Path(folder) / "nats.conf"
            config.write_text(
                f'listen: "127.0.0.1:{free_port()}"\n'
                f'websocket {{\n  listen: "127.0.0.1:{port}"\n  no_tls: true\n}}\n'
            )
            command, protocol = ["nats-server", "-c", str(config)], "nats"
        else:
            raise ValueError(f"unknown server {name!r}")
        env = {**os.environ, "PYTHONASYNCIODEBUG": ""}
        if bus is not None:
            env |= {"KMZ_HUB_BUS": bus[0], "KMZ_HUB_BUS_PREFIX": bus[1]}
        process = subprocess.Popen(
            [*pin, *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_raise_file_limit,
            env=env,
        )
        try:
            wait_for_port(port, process)
            yield Server(name, protocol, f"ws://127.0.0.1:{port}", process, http, log)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if schema is not None and hub_log is not None:
                _postgres(hub_log, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def start_two_hubs(cpus: str, hub_log: str | None = None) -> Iterator[tuple[Server, Server, int]]:
    """Hubs A and B on a NATS server of their own (core NATS), all pinned to `cpus`.

    Yields (hub A, hub B, the NATS server's pid): agents go to A, clients to B.
    """
    pin = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
    port = free_port()
    nats = subprocess.Popen(
        [*pin, "nats-server", "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_raise_file_limit,
    )
    bus = (f"nats://127.0.0.1:{port}", f"kmzbench.{secrets.token_hex(4)}")
    try:
        wait_for_port(port, nats)
        with start("hub", cpus, hub_log, bus) as a, start("hub", cpus, hub_log, bus) as b:
            yield a, b, nats.pid
    finally:
        nats.terminate()
        try:
            nats.wait(timeout=10)
        except subprocess.TimeoutExpired:
            nats.kill()
            nats.wait()
