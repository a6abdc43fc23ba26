"""`kmz log --stats`, and retention in a running hub: what a user sees of the log's size."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kleinmaelzung.hub import HubConfig, RunningHub, start_hub
from kleinmaelzung.hub.log_retention import RETENTION_KEY
from kleinmaelzung.hub.store.retention import DAY_S, RetentionPolicy

from .hub.data_lab import NOVEMBER, Clock, fill
from .test_cli import kmz_async


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[tuple[RunningHub, Clock]]:
    clock = Clock()
    config = HubConfig(
        host="127.0.0.1",
        port=0,
        data_dir=tmp_path / "hub-data",
        retention=RetentionPolicy(samples_days=10, wire_days=1),
    )
    running = await start_hub(config, clock=clock)
    try:
        await fill(running, clock=clock)
        yield running, clock
    finally:
        await running.stop()


async def test_kmz_log_stats_shows_each_kind_and_what_a_pass_removed(
    lab: tuple[RunningHub, Clock],
) -> None:
    running, clock = lab
    shown = await kmz_async("log", "--stats", "--hub", running.url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["kind", "rows", "size", "oldest", "kept"]
    rows = {line.split()[0]: line for line in lines[1:6]}
    # Two kilns, 120 samples each, in 6 frames of both.
    assert rows["samples"].split()[1] == "240"
    assert rows["samples"].endswith("10 days")
    assert rows["wire"].endswith("1 day")
    assert rows["commands"].endswith("forever")
    assert lines[-1].startswith("on disk: ") and "(sqlite" in lines[-1]

    # Two days later the wire copies are due, the samples not yet.
    clock.now = NOVEMBER + 2 * DAY_S
    runner = running.app[RETENTION_KEY].runner
    assert runner is not None
    await runner.run_once()
    answer = await kmz_async("log", "--stats", "--json", "--hub", running.url)
    stats = json.loads(answer.stdout)
    kinds = {k["kind"]: k for k in stats["kinds"]}
    assert kinds["samples"]["rows"] == 240
    assert kinds["wire"]["rows"] == 0
    assert kinds["audit"]["rows"] >= 1  # the agent's hello stays
    assert stats["last_pass"]["removed"]["wire"] >= 12  # a data row per frame and kiln, acks
    history = await kmz_async("history", "kiln-air", "--since", str(NOVEMBER), "--hub", running.url)
    assert history.returncode == 0 and "temperature" in history.stdout + history.stderr
