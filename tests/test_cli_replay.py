"""`kmz replay` as a user runs it: a subprocess against a real hub, watched by a client."""

from __future__ import annotations

import pytest

from kleinmaelzung.client import Client, Sample
from kleinmaelzung.hub import RunningHub

from .client.test_replay import OFFSETS, logged_run
from .hub.data_lab import NOVEMBER
from .test_cli import kmz_async

__all__ = ["logged_run"]  # the fixture, used by name

pytestmark = pytest.mark.slow


async def test_kmz_replay_publishes_the_run_under_replay_ids(logged_run: RunningHub) -> None:
    async with Client(logged_run.url) as client, client.subscribe("replay.*") as subscription:
        since, until = str(NOVEMBER - 1), str(NOVEMBER + 60)
        done = await kmz_async(
            "replay",
            "--since",
            since,
            "--until",
            until,
            "--instrument",
            "kiln-air",
            "--speed",
            "100",
            "--hub",
            logged_run.url,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"kiln-air -> replay.kiln-air: {len(OFFSETS)} samples"
        seen = []
        async for event in subscription:
            assert isinstance(event, Sample)
            seen.append(event.values["temperature"])
            if len(seen) == len(OFFSETS):
                break
    assert seen == [20.0 + i for i in range(len(OFFSETS))]


async def test_kmz_replay_refuses_a_speed_of_zero(logged_run: RunningHub) -> None:
    done = await kmz_async("replay", "--since", "-1h", "--speed", "0", "--hub", logged_run.url)
    assert done.returncode == 2
    assert "--speed must be above 0" in done.stderr
