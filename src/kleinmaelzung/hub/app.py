"""The hub's app factory, startup and shutdown, and ways to run it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ..protocol import Ack, CloseCode
from . import rest, views
from .acks import AckGatherer
from .config import HubConfig
from .registry import Registry
from .router import Router
from .services import HUB_KEY, Hub
from .store import SqliteStore, Store

_log = logging.getLogger(__name__)


def create_app(
    *,
    config: HubConfig,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """Build the hub's aiohttp application; the store opens when the app starts."""
    app = web.Application()
    hub_ref: list[Hub] = []

    def send_ack(agent_id: str, seqs: dict[str, int]) -> None:
        hub = hub_ref[0]
        entry = hub.registry.agents.get(agent_id)
        if entry is not None:
            hub.router.send(entry.peer, Ack(seqs=seqs, clock=hub.router.monotonic()))

    gatherer = AckGatherer(send_ack)
    on_committed = gatherer.committed

    owned_store = store is None
    if store is None:
        store = SqliteStore(config.traffic_db, on_committed=on_committed)
    router = Router(store, clock)
    hub = Hub(
        config=config,
        store=store,
        registry=Registry(),
        router=router,
        clock=clock,
        started=time.monotonic(),
    )
    hub_ref.append(hub)
    app[HUB_KEY] = hub

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if owned_store and isinstance(store, SqliteStore):
            await store.open()
        _log.info("hub started", extra={"data": str(config.data_dir)})
        yield
        # Acknowledge what is committed before the agents go, so that they
        # need not send it again to the next hub.
        await store.flush()
        gatherer.flush()
        for peer in list(hub.peers):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await peer.ws.close(code=CloseCode.GOING_AWAY, message=b"hub shutting down")
        await store.close()
        _log.info("hub stopped")

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/ws/agent", views.agent_endpoint)
    app.router.add_get("/ws/client", views.client_endpoint)
    app.router.add_get("/api/health", rest.health)
    app.router.add_get("/api/instruments", rest.instruments)
    app.router.add_get("/api/log", rest.traffic_log)
    app.router.add_get("/", rest.status_page)
    return app


@dataclass
class RunningHub:
    """A hub serving in the current event loop."""

    url: str
    app: web.Application
    runner: web.AppRunner

    @property
    def hub(self) -> Hub:
        """The hub's services."""
        return self.app[HUB_KEY]

    async def stop(self) -> None:
        """Close every connection, flush the log, stop listening."""
        await self.runner.cleanup()


async def start_hub(config: HubConfig, *, clock: Callable[[], float] = time.time) -> RunningHub:
    """Start a hub in this event loop; port 0 picks a free port (see `.url`)."""
    app = create_app(config=config, clock=clock)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = config.port
    # The bound socket tells the real port when 0 was asked for.
    sockets = getattr(site._server, "sockets", None)
    if sockets:
        port = sockets[0].getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    return RunningHub(url=f"http://{host}:{port}", app=app, runner=runner)


async def run_hub(
    config: HubConfig,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until `stop` is set or the task is cancelled."""
    running = await start_hub(config)
    try:
        if on_ready is not None:
            on_ready(running.url)
        await (stop or asyncio.Event()).wait()
    finally:
        await running.stop()


def serve_hub(*, host: str, port: int, data_dir: Path) -> None:
    """Run a hub in the foreground until Ctrl-C or SIGTERM (`kmz hub`)."""
    config = HubConfig(host=host, port=port, data_dir=data_dir)
    # The traffic-log writer thread must not hold the GIL for the default
    # 5 ms while a sample waits to be forwarded: hand it over 10x sooner
    # (S2x p99 in benchmarks/run.py: 1.4-1.7 ms with this, 1.8-2.1 without).
    sys.setswitchinterval(0.0005)
    _log.info("listening", extra={"url": f"http://{host}:{port}", "data": str(data_dir)})
    web.run_app(
        create_app(config=config),
        host=host,
        port=port,
        access_log=None,
        print=None,
        shutdown_timeout=2.0,
    )
