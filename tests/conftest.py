"""Shared fixtures: a real hub on 127.0.0.1 with its data in a temporary directory."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kleinmaelzung.hub import HubConfig, RunningHub, start_hub


@pytest.fixture(scope="session", autouse=True)
def session_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Agents started by module- and session-wide fixtures never spool into ~/.local/state."""
    state = tmp_path_factory.mktemp("agent-state")
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(state)
    yield state
    if before is None:
        del os.environ["XDG_STATE_HOME"]
    else:
        os.environ["XDG_STATE_HOME"] = before


@pytest.fixture(autouse=True)
def agent_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's agents keep their spool in its own directory (and so do its subprocesses)."""
    state = tmp_path / "agent-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's tokens file (`kmz demo` writes one) is its own, never ~/.config's."""
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.delenv("KMZ_TOKEN", raising=False)
    return config


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[RunningHub]:
    """A hub serving on a free port of 127.0.0.1; `.url` is its base URL."""
    running = await start_hub(
        HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "hub-data", name="test-hub")
    )
    try:
        yield running
    finally:
        await running.stop()
