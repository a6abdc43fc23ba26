"""Run kmz subcommands as separate processes, and wait for what they promise."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
DEADLINE_S = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A `kmz` subprocess whose output goes to a file, shown when a test fails."""

    def __init__(
        self, name: str, args: list[str], log_dir: Path, *, asyncio_debug: bool = True
    ) -> None:
        """`asyncio_debug=False` runs it as users do, without the test command's
        PYTHONASYNCIODEBUG: for tests that measure latency (debug mode took the hub
        from 10% to 41% of a core under a flood, and another client's p99 with it)."""
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if not asyncio_debug:
            env.pop("PYTHONASYNCIODEBUG", None)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "kleinmaelzung.cli", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def output(self) -> str:
        """Everything the process printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def interrupt(self, timeout: float = DEADLINE_S) -> int:
        """Ctrl-C, then wait for a clean exit; return its status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        return self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=DEADLINE_S)

    def stop(self) -> None:
        """Stop however it takes; used at teardown."""
        try:
            self.interrupt(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        self._log.close()


def wait_until(
    probe: Callable[[], T | None], what: str, timeout: float = DEADLINE_S, *procs: Process
) -> T:
    """Call `probe` until it returns something not None, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            if proc.popen.poll() is not None:
                raise AssertionError(
                    f"{proc.name} exited ({proc.popen.returncode}) while waiting for {what}:\n"
                    + proc.output()
                )
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            details = "\n".join(f"--- {p.name}:\n{p.output()}" for p in procs)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{details}")
        time.sleep(0.05)  # polling interval of a deadline-bounded wait, not a synchronisation


async def wait_until_async(
    probe: Callable[[], T | None], what: str, timeout: float = DEADLINE_S, *procs: Process
) -> T:
    """`wait_until` without blocking the event loop."""
    return await asyncio.to_thread(wait_until, probe, what, timeout, *procs)


def get_json(url: str) -> Any:
    """GET a JSON document, or None if the server is not answering yet."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def read_json_file(path: Path) -> Any:
    """The JSON in `path`, or None while it does not exist yet."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# --- a streaming lab for fault tests: many simulated instruments, a spool, restarts ----------


def terminate(proc: Process, timeout: float = DEADLINE_S) -> int:
    """SIGTERM (what systemd sends), then wait for the exit; return its status."""
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGTERM)
    return proc.popen.wait(timeout=timeout)


def thermometer_ids(count: int) -> list[str]:
    """`count` instrument ids the simulator serves as thermometers: therm-01, therm-02, ..."""
    return [f"therm-{n:02d}" for n in range(1, count + 1)]


def write_streaming_config(
    path: Path,
    hub_url: str,
    paths: dict[str, str],
    *,
    poll_interval_s: float,
    spool_path: Path,
    agent_id: str = "fault-pi",
    max_samples: int | None = None,
) -> Path:
    """An agent config for simulated thermometers polled at one rate, with its spool file."""
    lines = [f'hub = "{hub_url}"', f'agent_id = "{agent_id}"', "", "[spool]"]
    lines.append(f'path = "{spool_path}"')
    if max_samples is not None:
        lines.append(f"max_samples = {max_samples}")
    lines.append("")
    for instrument_id, port in sorted(paths.items()):
        lines += [
            "[[instruments]]",
            f'id = "{instrument_id}"',
            'profile = "kmz-thermometer"',
            f'port = "{port}"',
            f"poll_interval_s = {poll_interval_s}",
            "",
        ]
    path.write_text("\n".join(lines))
    return path


class StreamingLab:
    """`kmz sim` thermometers, a `kmz hub` and a `kmz agent` with a spool, each restartable.

    Each (re)start gets its own output file (hub-1.log, agent-2.log, ...), so
    that a failure shows every process's story. The agent reaches the hub at
    `agent_hub_url` (a fault proxy's, say), clients at `url`.
    """

    def __init__(
        self,
        tmp: Path,
        *,
        instruments: int,
        poll_interval_s: float,
        port: int | None = None,
        agent_hub_url: str | None = None,
        max_samples: int | None = None,
    ) -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ids = thermometer_ids(instruments)
        self.poll_interval_s = poll_interval_s
        self.spool_path = tmp / "agent-spool.sqlite"
        self.log_path = tmp / "data" / "traffic.sqlite3"
        self.config = tmp / "agent.toml"
        self.hub: Process | None = None
        self.agent: Process | None = None
        self.hub_starts = 0
        self.agent_starts = 0
        self._agent_hub_url = agent_hub_url or self.url
        self._max_samples = max_samples
        self._paths_file = tmp / "ptys.json"
        self.sim = Process(
            "sim", ["sim", "--seed", "11", "--paths-file", str(self._paths_file), *self.ids], tmp
        )
        self.processes: list[Process] = [self.sim]

    def start(self) -> StreamingLab:
        """Start simulator, hub and agent; return once every instrument is online."""
        paths = wait_until(
            lambda: read_json_file(self._paths_file), "simulator ptys", 15.0, self.sim
        )
        write_streaming_config(
            self.config,
            self._agent_hub_url,
            paths,
            poll_interval_s=self.poll_interval_s,
            spool_path=self.spool_path,
            max_samples=self._max_samples,
        )
        self.start_hub()
        self.start_agent()
        self.wait_online()
        return self

    def start_hub(self) -> Process:
        """(Re)start the hub on the same port and data; return once /api/health answers."""
        self.hub_starts += 1
        name = f"hub-{self.hub_starts}"
        args = ["hub", "--port", str(self.port), "--data", str(self.tmp / "data")]
        self.hub = Process(name, args, self.tmp)
        self.processes.append(self.hub)
        wait_until(lambda: get_json(self.url + "/api/health"), "hub health", 15.0, self.hub)
        return self.hub

    def start_agent(self) -> Process:
        """(Re)start the agent with the same config (and so the same spool)."""
        self.agent_starts += 1
        self.agent = Process(f"agent-{self.agent_starts}", ["agent", str(self.config)], self.tmp)
        self.processes.append(self.agent)
        return self.agent

    def states(self) -> dict[str, str]:
        """Each instrument's state at the hub (empty while the hub does not answer)."""
        listed = get_json(self.url + "/api/instruments") or []
        return {record["id"]: record["state"] for record in listed}

    def wait_online(self, timeout: float = 30.0) -> None:
        """Wait until the hub lists every instrument online."""
        wanted = set(self.ids)

        def online() -> bool | None:
            states = self.states()
            return True if {i for i, s in states.items() if s == "online"} >= wanted else None

        procs = [p for p in (self.hub, self.agent) if p is not None]
        wait_until(online, "every instrument online", timeout, *procs)

    def stop(self) -> None:
        """Stop every process still running (agent first, so that it can deliver)."""
        for proc in reversed(self.processes):
            proc.stop()

    def outputs(self) -> str:
        """Every process's output, for a failing test's message."""
        return "\n".join(f"--- {p.name}:\n{p.output()[-4000:]}" for p in self.processes)


def kept_in_spool(output: str) -> int | None:
    """The count an agent logged at exit as kept in its spool, None if it logged none."""
    found = re.findall(r"kept in the spool.*?count=(\d+)", output)
    return int(found[-1]) if found else None


def watch_lines(output: str) -> list[dict[str, Any]]:
    """The samples a `kmz watch --json` printed (its status lines are not JSON)."""
    samples = []
    for line in output.splitlines():
        if line.startswith('{"instrument"'):
            samples.append(json.loads(line))
    return samples


def logged_times(output: str, message: str) -> list[float]:
    """When a `kmz` process logged `message` (Unix time, from its log lines' local time)."""
    times = []
    for line in output.splitlines():
        if f": {message}" in line:
            stamp, _, millis = line[:23].partition(",")
            with contextlib.suppress(ValueError):
                local = time.strptime(stamp, "%Y-%m-%d %H:%M:%S")
                times.append(time.mktime(local) + int(millis) / 1000)
    return times
