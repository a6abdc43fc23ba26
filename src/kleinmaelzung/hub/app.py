"""The hub's app factory, startup and shutdown, and ways to run it."""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from ..protocol import Ack, CloseCode, PeerKind
from . import dashboard, metrics, openapi, rest, views
from .acks import AckGatherer
from .admission import Admission, AdmittingSite, Tls, raise_open_file_limit
from .auth.web import install as install_auth
from .bus import Bus, BusError
from .calibration_routes import install as install_calibrations
from .commands import Commands
from .config import HubConfig
from .data_routes import install as install_data_routes
from .errors import HubStartError
from .fanout import Fanout
from .federation import BusFanout, join_bus
from .fleet_routes import install as install_fleet
from .handlers import default_handlers
from .rates import UserRates
from .registry import Registry
from .services import HUB_KEY, Hub
from .store import SqliteStore, Store, StoreError, store_for_url
from .store.urls import sqlite_url
from .subscriptions import Subscriptions
from .tls import check_tls_pair, server_context
from .traffic import TrafficLog, split_ack_key

_log = logging.getLogger(__name__)

#: Longest a shutdown waits for the log to commit before it closes peers
#: anyway: what is not acknowledged stays with the agents.
SHUTDOWN_FLUSH_S = 5.0
#: Longest a shutdown waits for peers to take their close frame.
SHUTDOWN_CLOSE_S = 2.0


def create_app(
    *,
    config: HubConfig,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    bus: Bus | None = None,
) -> web.Application:
    """Build the hub's aiohttp application; the store opens when the app starts.

    With `config.bus`, or a `bus` passed in (a `LocalBus`: hubs in one
    process), the hub shares its instruments with the other hubs there
    (`federation`); it connects to `config.bus` when it starts.

    A `store` passed in must not be open yet: the app opens it, with the
    hub's acknowledgements wired to its commits, and closes it at cleanup.
    Without one, the log is `config.log_url`, else SQLite in `config.data_dir`.
    Raises `LogUrlError` for a `config.log_url` this hub cannot use.
    """
    app = web.Application()
    boot_id = secrets.token_hex(4)
    subscriptions = Subscriptions()
    acks_to: list[Callable[[str, dict[str, int]], None]] = []
    gatherer = AckGatherer(lambda key, seqs: acks_to[0](key, seqs))
    if store is None:
        degraded_after_s = config.log_degraded_after_s
        store = (
            store_for_url(config.log_url, degraded_after_s=degraded_after_s)
            if config.log_url
            else SqliteStore(config.traffic_db, degraded_after_s=degraded_after_s)
        )
    store.set_on_committed(gatherer.committed)
    traffic = TrafficLog(store, clock)
    # A hub alone keeps the plain Fanout: its forwarding path has no bus check.
    on_bus = bus is not None or config.bus is not None
    fanout = (BusFanout if on_bus else Fanout)(
        subscriptions, traffic, max_message_bytes=config.limits.max_hub_message_bytes
    )
    hub = Hub(
        config=config,
        store=store,
        traffic=traffic,
        registry=Registry(max_remembered=config.limits.max_remembered_instruments),
        subscriptions=subscriptions,
        fanout=fanout,
        commands=Commands(fanout, boot_id=boot_id, monotonic=monotonic),
        acks=gatherer,
        handlers=default_handlers(),
        clock=clock,
        started=monotonic(),
        boot_id=boot_id,
        user_rates=UserRates(config.limits),
    )

    def send_ack(key: str, seqs: dict[str, int]) -> None:
        agent_id, run = split_ack_key(key)
        entry = hub.registry.agents.get(agent_id)
        # Named by run: the agent holds the samples of earlier runs (its
        # spool's backlog) beside its current one, and seqs are per run.
        if entry is not None:
            hub.fanout.send(entry.peer, Ack(seqs=seqs, clock=hub.commands.monotonic(), run=run))

    acks_to.append(send_ack)
    app[HUB_KEY] = hub
    app.cleanup_ctx.append(_lifecycle)
    if on_bus:
        join_bus(hub, app, bus)  # after the store: the bus is left before it closes
    # Tokens, grants, the Origin check, revocation within 1 s (`auth`).
    install_auth(app, hub)
    # Before aiohttp cuts the connections: acknowledge what is committed and
    # close every peer with 1001, so agents need not resend it.
    app.on_shutdown.append(_close_peers)
    app.router.add_get("/ws/agent", views.agent_endpoint)
    app.router.add_get("/ws/client", views.client_endpoint)
    app.router.add_get("/api/health", rest.health)
    app.router.add_get("/api/ready", rest.ready)
    app.router.add_get("/api/asyncapi.json", rest.asyncapi)
    app.router.add_get("/api/openapi.json", openapi.openapi_json)
    app.router.add_get("/api/instruments", rest.instruments)
    app.router.add_get("/api/agents", rest.agents)
    app.router.add_delete("/api/instruments/{instrument}", rest.forget_instrument)
    # The log (filtered, paged, streamed), history and export (issue 13).
    install_data_routes(app)
    app.router.add_get("/metrics", metrics.metrics)
    # Calibration records, certificates and corrections (issue 12).
    install_calibrations(app, hub)
    # Every agent seen, configuration held at the hub (issue 17).
    install_fleet(app, hub)
    # The dashboard (`/`, `/static/`, sign-in): a client of the routes above.
    dashboard.install(app)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    await hub.store.open()
    for known in await hub.store.load_instruments():
        hub.registry.remember(known.info, known.agent, known.last_seen)
    for evicted in hub.registry.evict_offline():
        hub.traffic.forget_instrument(evicted)
    yield
    await hub.tasks.cancel_all()
    try:
        await hub.store.close()
    except StoreError as exc:
        _log.error("traffic log did not close cleanly", extra={"error": str(exc)})


async def _close_peers(app: web.Application) -> None:
    hub = app[HUB_KEY]
    try:
        await asyncio.wait_for(hub.store.flush(), SHUTDOWN_FLUSH_S)
    except (TimeoutError, StoreError) as exc:
        _log.error(
            "traffic log not flushed at shutdown; agents keep what is unacknowledged",
            extra={"error": str(exc) or type(exc).__name__},
        )
    hub.acks.flush()
    # Clients first: they must not hear that instruments went offline, when
    # it is the hub that goes.
    for kind in (PeerKind.CLIENT, PeerKind.AGENT):
        peers = [p for p in hub.peers if p.kind is kind]
        if peers:
            await asyncio.wait(
                [
                    asyncio.ensure_future(p.disconnect(CloseCode.GOING_AWAY, "hub shutting down"))
                    for p in peers
                ],
                timeout=SHUTDOWN_CLOSE_S / 2,
            )


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


async def start_hub(
    config: HubConfig,
    *,
    clock: Callable[[], float] = time.time,
    store: Store | None = None,
    writer_process: bool = False,
    bus: Bus | None = None,
) -> RunningHub:
    """Start a hub in this event loop; port 0 picks a free port (see `.url`).

    Without a `store`, `writer_process` has the log written by a process of
    its own (`store.process`), as `kmz hub` does, rather than by a thread.
    Raises `HubStartError` if it cannot listen (the port is taken, the address
    is not this machine's) or cannot open its traffic log (a bad URL, a server
    that cannot be reached), with nothing left running, or cannot load its TLS
    certificate and key (`config.tls_cert`, `config.tls_key`).
    """
    check_tls_pair(config.tls_cert, config.tls_key)
    tls = None
    if config.tls_cert is not None and config.tls_key is not None:
        tls = Tls(
            server_context(config.tls_cert, config.tls_key),
            handshake_s=config.timeouts.handshake_s,
            shutdown_s=config.timeouts.close_s,
        )
    try:
        if store is None and writer_process:
            url = config.log_url or sqlite_url(config.traffic_db)
            store = store_for_url(
                url, writer_process=True, degraded_after_s=config.log_degraded_after_s
            )
        app = create_app(config=config, clock=clock, store=store, bus=bus)
    except StoreError as exc:
        raise HubStartError(str(exc)) from None
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=2.0,
        # Closes a connection with no complete request this long after it
        # opened (aiohttp's default is an hour: slowloris held sockets for good).
        keepalive_timeout=config.timeouts.http_idle_s,
    )
    try:
        await runner.setup()  # opens the store, connects to the bus
    except (StoreError, BusError) as exc:
        await runner.cleanup()
        raise HubStartError(str(exc)) from None
    admission = Admission(config.limits, raise_open_file_limit())
    site = AdmittingSite(runner, config.host, config.port, admission=admission, tls=tls)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise HubStartError(_why_not_listening(config, exc)) from None
    port = config.port
    # The bound socket tells the real port when 0 was asked for.
    sockets = getattr(site._server, "sockets", None)
    if sockets:
        port = sockets[0].getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"{'https' if tls else 'http'}://{host}:{port}"
    _log.info("hub started", extra={"url": url, "data": str(config.data_dir)})
    return RunningHub(url=url, app=app, runner=runner)


def _why_not_listening(config: HubConfig, exc: OSError) -> str:
    where = f"{config.host}:{config.port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {config.port} on {config.host} is in use. Is a hub or demo already running? "
            "Stop it, or pick another port with --port."
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {config.host} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    return f"cannot listen on {where}: {exc.strerror or exc}"


async def run_hub(
    config: HubConfig,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
    writer_process: bool = False,
) -> None:
    """Serve until `stop` is set or the task is cancelled (`start_hub` for `writer_process`)."""
    running = await start_hub(config, writer_process=writer_process)
    try:
        if on_ready is not None:
            on_ready(running.url)
        await (stop or asyncio.Event()).wait()
    finally:
        await running.stop()


def serve_hub(config: HubConfig, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Run a hub in the foreground until Ctrl-C or SIGTERM (`kmz hub`).

    Raises `HubStartError` if it cannot listen or cannot open its traffic log,
    or would serve beyond loopback without auth and not `insecure`.
    """
    # A worker thread (a log query) must not hold the GIL for the default
    # 5 ms while a sample waits to be forwarded: hand it over 10x sooner
    # (measured when the log's writer was a thread: S2x p99 in
    # benchmarks/run.py 1.4-1.7 ms with this, 1.8-2.1 without).
    sys.setswitchinterval(0.0005)
    asyncio.run(_serve_until_signalled(config, on_ready))


async def _serve_until_signalled(config: HubConfig, on_ready: Callable[[str], None] | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    started = time.monotonic()
    # The log's writer in a process of its own: off the forwarding loop's GIL.
    await run_hub(config, stop=stop, on_ready=on_ready, writer_process=True)
    _log.info("hub stopped", extra={"uptime_s": round(time.monotonic() - started, 1)})
