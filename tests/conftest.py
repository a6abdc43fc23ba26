"""Shared fixtures: a real hub on 127.0.0.1 with its data in a temporary directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kleinmaelzung.hub import HubConfig, RunningHub, start_hub


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
