"""The hub's side of retention: the pruning task, and ``GET /api/log/stats``.

The pruning itself is the store's (`store.retention`); this runs it in the
background for as long as the app runs, every ``[retention] interval_s``.
Beside it runs the roll-up of history's per-minute summaries
(`store.summaries`): it follows the same retention (summaries go with the
samples they summarise) and, like the pruning, works in small batches off
the hub's loop and outside the writer's transactions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
from aiohttp import web

from .services import HUB_KEY
from .store.retention import RetentionRunner, pruner_for
from .store.summaries import RollupRunner, rollup_for


@dataclass
class Retention:
    """The app's retention runner, once the store is open; None if its backend has no pruner."""

    runner: RetentionRunner | None = None
    rollup: RollupRunner | None = None


RETENTION_KEY = web.AppKey("retention", Retention)
#: The first pass waits this long after the hub started: startup stays fast.
FIRST_PASS_DELAY_S = 60.0
#: The first roll-up pass (on an older log: the start of its backfill).
FIRST_ROLLUP_DELAY_S = 5.0


def install(app: web.Application) -> None:
    """Add ``GET /api/log/stats`` and the background pruning to the app."""
    app[RETENTION_KEY] = Retention()
    app.router.add_get("/api/log/stats", log_stats)
    app.cleanup_ctx.append(_pruning)


async def _pruning(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    rollup = rollup_for(getattr(hub.store, "backend", None))
    if rollup is not None:
        rolling = RollupRunner(rollup, hub.config.retention, hub.clock)
        app[RETENTION_KEY].rollup = rolling
        hub.tasks.spawn(rolling.run(FIRST_ROLLUP_DELAY_S), "kmz-history-rollup")
    pruner = pruner_for(getattr(hub.store, "backend", None))
    if pruner is None:
        yield
        return
    runner = RetentionRunner(pruner, hub.config.retention, hub.clock)
    app[RETENTION_KEY].runner = runner
    hub.tasks.spawn(runner.run(FIRST_PASS_DELAY_S), "kmz-retention")
    yield


async def log_stats(request: web.Request) -> web.Response:
    """`GET /api/log/stats` (admin): rows, sizes and the oldest entry per kind."""
    hub = request.app[HUB_KEY]
    runner = request.app[RETENTION_KEY].runner
    if runner is None:
        return web.json_response(
            {"code": "not_supported", "message": "this hub's log keeps no statistics"},
            status=501,
        )
    stats = await runner.pruner.stats(hub.config.retention)
    body = msgspec.to_builtins(stats)
    body["last_pass"] = None if runner.last is None else msgspec.to_builtins(runner.last)
    return web.Response(body=msgspec.json.encode(body), content_type="application/json")
