"""Imports point down: each package loads alone, without the stacks it must not need."""

from __future__ import annotations

import subprocess
import sys

import pytest

FORBIDDEN = {
    # The protocol core is pure: no event loop, no sockets, no web library.
    "kleinmaelzung.protocol": [
        "asyncio",
        "aiohttp",
        "kleinmaelzung.transport",
        "kleinmaelzung.hub",
        "kleinmaelzung.agent",
        "kleinmaelzung.client",
    ],
    # The agent runs on a Pi: no web server, no database, no hub or client code.
    "kleinmaelzung.agent": [
        "aiohttp.web",
        "sqlite3",
        "kleinmaelzung.hub",
        "kleinmaelzung.client",
        "kleinmaelzung.sim",
    ],
    "kleinmaelzung.client": [
        "aiohttp.web",
        "sqlite3",
        "kleinmaelzung.hub",
        "kleinmaelzung.agent",
        "kleinmaelzung.sim",
    ],
    "kleinmaelzung.hub": ["kleinmaelzung.agent", "kleinmaelzung.client", "kleinmaelzung.sim"],
    "kleinmaelzung.sim": ["aiohttp", "msgspec", "kleinmaelzung.protocol"],
    # `kmz agent` on a Pi must not pay for the hub stack at start-up.
    "kleinmaelzung.cli": ["aiohttp", "kleinmaelzung.hub", "kleinmaelzung.agent"],
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_alone(package: str) -> None:
    code = (
        f"import sys, {package}\n"
        f"loaded = [m for m in {FORBIDDEN[package]!r} if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{package} loaded {result.stdout.strip()}"
