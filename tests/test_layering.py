"""Imports point down: each package loads alone, without the stacks it must not need."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = {
    # Reading config files is pure: the agent and the hub both use it.
    "kleinmaelzung.configfile": [
        "asyncio",
        "aiohttp",
        "kleinmaelzung.transport",
        "kleinmaelzung.hub",
        "kleinmaelzung.agent",
        "kleinmaelzung.client",
    ],
    # The protocol core is pure: no event loop, no sockets, no web library.
    "kleinmaelzung.protocol": [
        "asyncio",
        "aiohttp",
        "kleinmaelzung.transport",
        "kleinmaelzung.hub",
        "kleinmaelzung.agent",
        "kleinmaelzung.client",
    ],
    # The agent runs on a Pi: no web server, no database server's client, no
    # hub or client code. (Its spool is SQLite, from the standard library.)
    "kleinmaelzung.agent": [
        "aiohttp.web",
        "asyncpg",
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
    # The peer side of a link: protocol below it, nothing beside or above.
    "kleinmaelzung.transport": [
        "aiohttp.web",
        "sqlite3",
        "kleinmaelzung.hub",
        "kleinmaelzung.agent",
        "kleinmaelzung.client",
        "kleinmaelzung.sim",
    ],
    # The PostgreSQL driver loads only when a log URL names PostgreSQL.
    "kleinmaelzung.hub": [
        "asyncpg",
        "kleinmaelzung.agent",
        "kleinmaelzung.client",
        "kleinmaelzung.sim",
    ],
    "kleinmaelzung.sim": ["aiohttp", "msgspec", "kleinmaelzung.protocol"],
    # Calibration arithmetic and records are pure: no web, no database, no
    # event loop; the hub wires them to storage and REST (issue 12).
    "kleinmaelzung.calibration": [
        "asyncio",
        "aiohttp",
        "sqlite3",
        "asyncpg",
        "typst",
        "kleinmaelzung.hub",
        "kleinmaelzung.agent",
        "kleinmaelzung.client",
        "kleinmaelzung.transport",
    ],
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


HUB = Path(__file__).parents[1] / "src" / "kleinmaelzung" / "hub"
#: The hub's services: handlers call them, never the reverse.
SERVICES = ["subscriptions", "fanout", "commands", "registry", "traffic", "acks", "peers"]
ABOVE_SERVICES = {"handlers", "membership", "views", "rest", "app", "services"}


def _relative_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_hub_services_never_call_up_into_handlers(service: str) -> None:
    assert not _relative_imports(HUB / f"{service}.py") & ABOVE_SERVICES


def test_only_the_traffic_facade_writes_to_the_store() -> None:
    writes = ("store.append(", "store.save_instrument(", "store.forget_instrument(")
    writers = sorted(
        str(path.relative_to(HUB))
        for path in HUB.rglob("*.py")
        if "store" not in path.relative_to(HUB).parts and any(w in path.read_text() for w in writes)
    )
    assert writers == ["traffic.py"]
