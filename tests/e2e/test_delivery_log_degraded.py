"""The hub's log volume fills up while instruments stream (issue 10, item 5).

Separate processes: `kmz sim` thermometers on real ptys, `kmz hub` whose data
folder is a small volume of its own (a 16 MiB tmpfs, so root only), `kmz
agent` with its spool elsewhere, and a raw WebSocket client. The volume is
filled: the log cannot be written, the hub says `degraded` on /api/health and
tells the agent (`log_degraded`), and the client keeps receiving live samples
meanwhile. The volume is freed: the log is back, the hub asks the agent to
reconnect, and the agent resends what was not acknowledged. At the end every
sample the agent produced is in the log exactly once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..hub.test_log_full_disk import fill, mounted_volume
from .delivery_check import RawWatcher, check_delivery, read_hub_log, read_spool
from .processes import StreamingLab, get_json, terminate, wait_until_async

pytestmark = pytest.mark.slow

VOLUME_BYTES = 16 * 1024 * 1024


@pytest.fixture
def hub_volume(tmp_path: Path) -> Iterator[Path]:
    """The hub's data folder as a small file system of its own."""
    with mounted_volume(tmp_path / "data", VOLUME_BYTES) as volume:
        yield volume


def log_state(url: str) -> str | None:
    health = get_json(url + "/api/health")
    return None if health is None else str(health["log"]["state"])


@pytest.mark.timeout(150)
async def test_a_full_log_volume_keeps_live_data_flowing_and_loses_nothing(
    tmp_path: Path, hub_volume: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Degraded after 2 s of failing writes, not the default 10 (the setting
    # `log_degraded_after_s`, through its environment variable).
    monkeypatch.setenv("KMZ_HUB_LOG_DEGRADED_AFTER_S", "2")
    lab = StreamingLab(tmp_path, instruments=3, poll_interval_s=1 / 20)
    watcher = RawWatcher(lab.url)
    watching: asyncio.Task[None] | None = None
    filler: Path | None = None
    try:
        await asyncio.to_thread(lab.start)
        assert lab.hub is not None and lab.agent is not None
        hub, agent = lab.hub, lab.agent
        watching = asyncio.create_task(watcher.run())
        await asyncio.wait_for(watcher.subscribed_event.wait(), 15)

        filler = await asyncio.to_thread(fill, hub_volume)
        await wait_until_async(
            lambda: log_state(lab.url) == "degraded" or None, "the log degraded", 60, hub
        )
        health = get_json(lab.url + "/api/health")
        assert health is not None and "cannot be written" in health["log"]["reason"], health
        await wait_until_async(
            lambda: "log_degraded" in agent.output() or None, "the agent told", 15, agent
        )
        # Live data goes on while nothing can be logged.
        before = len(watcher.received)
        await wait_until_async(
            lambda: len(watcher.received) >= before + 3 * 20 or None,
            "live samples while degraded",
            15,
            hub,
        )
        assert log_state(lab.url) == "degraded"

        filler.unlink()
        filler = None
        await wait_until_async(lambda: log_state(lab.url) == "ok" or None, "the log back", 60, hub)
        await wait_until_async(
            lambda: "the agent is to resend" in hub.output() or None, "the agent asked", 15, hub
        )
        await asyncio.to_thread(lab.wait_online)
        # Streaming on the new connection, logged again.
        await wait_until_async(
            lambda: (get_json(lab.url + "/api/health") or {}).get("log_backlog") == 0 or None,
            "the log caught up",
            30,
            hub,
        )
        assert await asyncio.to_thread(terminate, agent) == 0, lab.outputs()
        assert await asyncio.to_thread(hub.interrupt) == 0, lab.outputs()

        log = read_hub_log(lab.log_path)
        verdicts = check_delivery(log, spool=read_spool(lab.spool_path))
        for bad in ("lost", "duplicated", "out_of_order", "dropped"):
            assert verdicts.count(bad) == 0, f"{bad}:\n{verdicts.explain()}"
        print(json.dumps({"received_live": len(watcher.received), **verdicts.figures()}))
    finally:
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        if filler is not None:
            filler.unlink(missing_ok=True)
        await asyncio.to_thread(lab.stop)
