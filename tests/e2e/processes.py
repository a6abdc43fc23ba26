"""Run kmz subcommands as separate processes, and wait for what they promise."""

from __future__ import annotations

import asyncio
import json
import os
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

    def __init__(self, name: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
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
