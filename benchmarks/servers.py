"""Start and stop the servers under test: our hub, Mosquitto-WS and NATS-WS, all on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import resource
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
    return name.startswith("hub") or shutil.which(_BINARIES[name]) is not None


_BINARIES = {"mosquitto": "mosquitto", "nats": "nats-server"}


@contextlib.contextmanager
def start(name: str, cpus: str) -> Iterator[Server]:
    """Start one server pinned to `cpus` (taskset list, '' for none); stop it afterwards."""
    pin = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=f"kmz-bench-{name}-") as folder:
        http = None
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
            protocol, http = "hub", f"http://127.0.0.1:{port}"
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
        process = subprocess.Popen(
            [*pin, *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_raise_file_limit,
            env=env,
        )
        try:
            wait_for_port(port, process)
            yield Server(name, protocol, f"ws://127.0.0.1:{port}", process, http)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
