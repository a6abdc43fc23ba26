"""The agent's one WebSocket to the hub: handshake, send samples, run commands, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp

from .. import __version__
from ..protocol import (
    PROTOCOL_VERSION,
    Ack,
    AgentHello,
    Command,
    Data,
    Error,
    ErrorCode,
    ErrorInfo,
    HandshakeError,
    HubClock,
    InstrumentInfo,
    Limits,
    Received,
    Reply,
    Status,
    Timeouts,
    agent_connection,
    encode,
)
from ..transport import AGENT_PATH, SocketPeek, backoff_delays, websocket_url
from .outbox import Outbox
from .permit import Permit

_log = logging.getLogger(__name__)


class Link:
    """Keeps one connection to the hub alive and moves messages both ways."""

    def __init__(
        self,
        *,
        hub: str,
        agent_id: str,
        token: str | None,
        run: str,
        instruments: Sequence[InstrumentInfo],
        outbox: Outbox,
        statuses: Callable[[], list[Status]],
        execute: Callable[[Command, Permit], Awaitable[Reply]],
        limits: Limits | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.url = websocket_url(hub, AGENT_PATH)
        self.agent_id = agent_id
        self.connected = asyncio.Event()
        #: Completed handshakes so far (1 after the first connect).
        self.sessions = 0
        self._hello = AgentHello(
            protocol=PROTOCOL_VERSION,
            agent_id=agent_id,
            instruments=list(instruments),
            token=token,
            software=f"kleinmaelzung/{__version__}",
            run=run,
        )
        self._outbox = outbox
        self._statuses = statuses
        self._execute = execute
        self._limits = limits or Limits()
        self._timeouts = timeouts or Timeouts()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def send_status(self, status: Status) -> None:
        """Send a status change now if connected; reconnects send every status anyway."""
        if self._ws is not None and not self._ws.closed:
            self._spawn(self._send(status))

    async def run(self) -> None:
        """Connect, serve, and reconnect with jittered backoff, until cancelled."""
        delays = backoff_delays(maximum_s=self._timeouts.reconnect_max_s)
        async with aiohttp.ClientSession() as session:
            while True:
                started = time.monotonic()
                try:
                    await self._connect_once(session)
                except HandshakeError as exc:
                    _log.error(
                        "hub refused the agent", extra={"code": exc.code, "detail": exc.message}
                    )
                    if exc.code in (ErrorCode.UNAUTHORIZED, ErrorCode.UNSUPPORTED_PROTOCOL):
                        # An operator must fix this; keep trying, but slowly.
                        delays = backoff_delays(
                            initial_s=self._timeouts.reconnect_max_s,
                            maximum_s=self._timeouts.reconnect_max_s,
                        )
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    _log.info("hub unreachable", extra={"url": self.url, "error": str(exc)})
                if time.monotonic() - started > 10.0:
                    delays = backoff_delays(maximum_s=self._timeouts.reconnect_max_s)
                await asyncio.sleep(next(delays))

    async def _connect_once(self, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(
            self.url,
            heartbeat=self._timeouts.heartbeat_s,
            max_msg_size=4 * self._limits.max_message_bytes,
        ) as ws:
            connection = agent_connection(self._limits)
            await ws.send_bytes(encode(self._hello))
            msg = await ws.receive(timeout=self._timeouts.handshake_s)
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise ConnectionError(f"hub closed during the handshake ({msg.type.name})")
            welcome = connection.receive(msg.data)  # raises HandshakeError unless a welcome
            clock = HubClock()
            if isinstance(welcome, Received) and welcome.message.clock is not None:
                clock.observe(welcome.message.clock, time.monotonic())
            # Commands check this before they start: a command read from a
            # connection that has since closed must not run.
            live = [True]
            peek = SocketPeek(ws.get_extra_info("socket"))
            self._ws = ws
            self.sessions += 1
            self.connected.set()
            _log.info("connected to hub", extra={"url": self.url})
            self._outbox.rewind()
            for status in self._statuses():
                await self._send(status)
            sender = asyncio.create_task(self._send_samples(ws))
            try:
                async for msg in ws:
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        self._handle(connection.receive(msg.data), clock, live, peek)
            finally:
                live[0] = False
                peek.close()
                self.connected.clear()
                self._ws = None
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
                _log.info("disconnected from hub", extra={"unacked": len(self._outbox)})

    def _handle(self, result: object, clock: HubClock, live: list[bool], peek: SocketPeek) -> None:
        if not isinstance(result, Received):
            _log.warning("unreadable frame from hub", extra={"detail": str(result)})
            return
        message = result.message
        if isinstance(message, Ack):
            if message.clock is not None:
                clock.observe(message.clock, time.monotonic())
            self._outbox.acknowledge(message.seqs)
        elif isinstance(message, Command):
            self._spawn(self._run_command(message, _permit(message, clock, live, peek)))
        elif isinstance(message, Error):
            _log.warning(
                "hub reported an error", extra={"code": message.code, "detail": message.message}
            )

    async def _run_command(self, command: Command, permit: Permit) -> None:
        log = {"instrument": command.instrument, "id": command.id, "command": command.name}
        _log.info("command", extra=log)
        try:
            reply = await self._execute(command, permit)
        except Exception as exc:
            _log.exception("command failed", extra=log)
            reply = Reply(
                id=command.id,
                ok=False,
                error=ErrorInfo(code=ErrorCode.INTERNAL_ERROR, message=f"agent error: {exc}"),
            )
        # On whatever connection is current: if the hub's still waiting (the
        # agent reconnected before the deadline), the client gets the outcome.
        await self._send(reply)

    async def _send_samples(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await self._outbox.wait_unsent()
            # Whatever accumulated while the last frame was written goes in
            # one frame: batching that adds no delay of its own.
            batch = self._outbox.take_unsent(self._limits.max_samples_per_data)
            await ws.send_frame(encode(Data(samples=batch)), aiohttp.WSMsgType.TEXT)

    async def _send(self, message: Status | Reply) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_frame(encode(message), aiohttp.WSMsgType.TEXT)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _permit(command: Command, clock: HubClock, live: list[bool], peek: SocketPeek) -> Permit:
    """When a command received now must no longer start."""
    deadline = command.deadline
    if deadline is not None and clock.synchronised:
        return Permit(
            remaining_s=lambda: clock.remaining(deadline, time.monotonic()),
            live=lambda: live[0],
            socket_state=peek.state,
        )
    # A hub that sends no deadline: the best the agent can do is count from
    # the moment it read the command.
    local_deadline = time.monotonic() + command.timeout_s
    return Permit(
        remaining_s=lambda: local_deadline - time.monotonic(),
        live=lambda: live[0],
        socket_state=peek.state,
    )
