"""The routes that get data back out of the hub: the log, history, export (issue 13)."""

from __future__ import annotations

from aiohttp import web

from . import export, history, log_api, log_retention, timeline


def install(app: web.Application) -> None:
    """Add ``GET /api/log``, ``/api/history/{instrument}`` and ``/api/export`` to the app,
    the log's retention (``/api/log/stats``, pruning in the background) and timelines."""
    app.router.add_get("/api/log", log_api.traffic_log)
    app.router.add_get("/api/history/{instrument}", history.history)
    export.install(app)
    log_retention.install(app)
    timeline.install(app)
