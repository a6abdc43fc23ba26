"""The agent's one WebSocket to the hub: send samples, run commands, on `transport.Connector`.

Connecting, the handshake, reconnecting with backoff and saying what is
wrong are the transport's (`transport.connection`). What is the agent's:
sending what the spool holds (a new run per connection: the backlog of
earlier runs and the live samples share the link), acknowledgements, commands that never start
after their deadline or from a connection that has gone, and stopping when
another agent took this agent's id (`AgentReplaced`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from .. import __version__
from ..protocol import (
    PROTOCOL_VERSION,
    Ack,
    AgentHello,
    AgentInfo,
    AgentState,
    Command,
    ConfigPush,
    ConfigResult,
    Data,
    Error,
    ErrorCode,
    ErrorInfo,
    Gap,
    HubClock,
    HubToAgentMessage,
    InstrumentInfo,
    Limits,
    ProtocolError,
    RawTraffic,
    Reply,
    Status,
    Timeouts,
)
from ..transport import (
    AGENT_PATH,
    Connection,
    ConnectionLost,
    Connector,
    HandshakeFailed,
    Healing,
    Trust,
    close_in_words,
    websocket_url,
)
from .errors import AgentError
from .permit import Permit
from .spool import Spool
from .vitals import Vitals

_log = logging.getLogger(__name__)

#: How often the agent tells the hub what its spool holds, when it changed.
STATE_INTERVAL_S = 5.0


class AgentReplaced(AgentError):
    """Another connection holds this agent's id at the hub (close code 4003); the link stopped.

    Either the hub closed this agent because a newer connection with the same
    `agent_id` replaced it, or the hub refused this agent's hello because the
    id (or an instrument) is taken. Reconnecting would take the id back, and
    two agents would replace each other forever: give each agent its own id.
    """

    def __init__(self, agent_id: str, reason: str, close_code: int | None) -> None:
        super().__init__(
            f"agent {agent_id!r} stopped: another connection holds its id at the hub ({reason}); "
            "give each agent its own agent_id"
        )
        self.agent_id = agent_id
        self.reason = reason
        self.close_code = close_code


class Link:
    """Keeps one connection to the hub alive and moves messages both ways."""

    def __init__(
        self,
        *,
        hub: str | Sequence[str],
        agent_id: str,
        token: str | None,
        run: str,
        instruments: Sequence[InstrumentInfo],
        spool: Spool,
        statuses: Callable[[], list[Status]],
        execute: Callable[[Command, Permit], Awaitable[Reply]],
        limits: Limits | None = None,
        timeouts: Timeouts | None = None,
        trust: Trust | None = None,
        configure: Callable[[ConfigPush], Awaitable[ConfigResult]] | None = None,
        about: Callable[[], AgentInfo] | None = None,
    ) -> None:
        """`configure` runs a configuration the hub sends; `about` says what the hub
        is told after each welcome (protocol 4: `agent_info`). Several `hub` URLs:
        the next is tried when one fails (`transport.Connector`)."""
        urls = [hub] if isinstance(hub, str) else list(hub)
        self.agent_id = agent_id
        self.connected = asyncio.Event()
        self._vitals = Vitals()
        #: Completed handshakes so far (1 after the first connect).
        self.sessions = 0
        hello = AgentHello(
            protocol=PROTOCOL_VERSION,
            agent_id=agent_id,
            instruments=list(instruments),
            token=token,
            software=f"kleinmaelzung/{__version__}",
            run=run,
        )
        self._spool = spool
        self._run = run
        self._statuses = statuses
        self._execute = execute
        self._configure = configure
        self._about = about
        self._limits = limits or Limits()
        self._connector: Connector[HubToAgentMessage] = Connector(
            [websocket_url(url, AGENT_PATH) for url in urls],
            hello,
            limits=limits,
            timeouts=timeouts,
            log_extra={"agent": agent_id},
            trust=trust,
        )
        self._connection: Connection[HubToAgentMessage] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Raw transcript messages dropped because the send queue was full.
        self.raw_dropped = 0

    @property
    def url(self) -> str:
        """The hub connected to, or tried next (ws:// or wss://)."""
        return self._connector.url

    def send_status(self, status: Status) -> None:
        """Send a status change now if connected; reconnects send every status anyway."""
        connection = self._connection
        if connection is not None and connection.live and not connection.send_soon(status):
            _log.warning(
                "status not sent now: the send queue is full; it is sent on the next connection",
                extra={"agent": self.agent_id, "instrument": status.instrument},
            )

    def send_raw(self, raw: RawTraffic) -> None:
        """Send a transcript's bytes now if connected; else (or if the queue is full) drop them."""
        connection = self._connection
        if connection is None or not connection.live:
            return
        try:
            if not connection.send_soon(raw):
                self.raw_dropped += 1
        except ProtocolError as exc:
            _log.error("raw not sent", extra={"code": exc.code, "detail": exc.message})

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until cancelled; raise `AgentReplaced`."""
        async with self._connector:
            while True:
                try:
                    connection = await self._connector.reconnect()
                except HandshakeFailed as exc:  # only a FINAL failure gets here
                    raise self._replaced(str(exc), exc.close_code) from None
                await self._serve(connection)
                lost = connection.lost
                if lost is not None and lost.healing is Healing.FINAL:
                    reason = close_in_words(lost.close_code, lost.close_reason)
                    raise self._replaced(reason, lost.close_code)

    def _replaced(self, reason: str, close_code: int | None) -> AgentReplaced:
        _log.error(
            "agent replaced at the hub by another connection with its id; stopping",
            extra={"agent": self.agent_id, "url": self.url, "reason": reason},
        )
        return AgentReplaced(self.agent_id, reason, close_code)

    async def _serve(self, connection: Connection[HubToAgentMessage]) -> None:
        clock = HubClock()
        if connection.welcome.clock is not None:
            clock.observe(connection.welcome.clock, connection.welcomed_at)
        self._connection = connection
        self.sessions += 1
        self.connected.set()
        _log.info("connected to hub", extra={"url": self.url})
        sender: asyncio.Task[None] | None = None
        reporter: asyncio.Task[None] | None = None
        try:
            # A new run per connection: what was taken before it is backlog,
            # in order by itself, and new samples go live beside it.
            await self._spool.start_session(f"{self._run}.{self.sessions}")
            if self._about is not None and connection.welcome.protocol >= 4:
                await self._send(self._about())
            for status in self._statuses():
                await self._send(status)
            sender = asyncio.create_task(self._send_samples(connection))
            reporter = asyncio.create_task(self._report_state())
            async for message in connection:
                self._handle(message, clock, connection)
        finally:
            # Commands check `connection.live` before they start: a command
            # read from a connection that has since closed must not run.
            if connection.live:
                await connection.close()
            self.connected.clear()
            self._connection = None
            self._spool.end_session()
            for task in (sender, reporter):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            _log.info("disconnected from hub", extra={"unacknowledged": self._spool.depth})

    def _handle(
        self, message: HubToAgentMessage, clock: HubClock, connection: Connection[Any]
    ) -> None:
        if isinstance(message, Ack):
            if message.clock is not None:
                clock.observe(message.clock, time.monotonic())
            self._spool.acknowledge(message.run or self._spool.run, message.seqs)
            if message.gaps:
                self._spool.acknowledge_gaps(message.gaps)
        elif isinstance(message, Command):
            self._spawn(self._run_command(message, _permit(message, clock, connection)))
        elif isinstance(message, ConfigPush):
            self._spawn(self._run_configure(message))
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

    async def _run_configure(self, push: ConfigPush) -> None:
        log = {"agent": self.agent_id, "revision": push.revision, "id": push.id}
        _log.info("configuration from the hub", extra=log)
        try:
            if self._configure is None:
                raise RuntimeError("this agent takes no configuration from the hub")
            result = await self._configure(push)
        except Exception as exc:
            _log.exception("configuration failed", extra=log)
            result = ConfigResult(
                id=push.id,
                revision=0,
                ok=False,
                error=ErrorInfo(code=ErrorCode.INTERNAL_ERROR, message=f"agent error: {exc}"),
            )
        await self._send(result)

    async def announce(self, about: AgentInfo, instruments: Sequence[InstrumentInfo]) -> None:
        """The agent serves these instruments now: tell the hub before any sample of a new
        one is sent (and say them in every later hello)."""
        hello = self._connector.hello
        assert isinstance(hello, AgentHello)
        self._connector.hello = msgspec.structs.replace(hello, instruments=list(instruments))
        await self._send(msgspec.structs.replace(about, instruments=list(instruments)))

    async def _send_samples(self, connection: Connection[Any]) -> None:
        """Send gaps, live samples and the backlog, sharing the link between them.

        Each turn sends every live sample waiting (as one frame), then at most
        one frame of backlog: a live sample waits behind one backlog frame at
        most, and a backlog drains at whatever rate the hub accepts.
        """
        spool = self._spool
        most = self._limits.max_samples_per_data

        async def send(message: Data | Gap) -> None:
            try:
                await connection.send(message)
            except ProtocolError as exc:
                # Ours to fix, not the link's: the rest still goes.
                _log.error("not sent", extra={"code": exc.code, "detail": exc.message})

        try:
            while True:
                await spool.wait_sendable()
                for gap in spool.take_gaps():
                    await send(gap)
                # Whatever accumulated while the last frame was written goes
                # in one frame: batching that adds no delay of its own.
                live = spool.take_live(most)
                if live:
                    await send(Data(samples=live, run=spool.run))
                backlog = await spool.take_backlog(most)
                if backlog is not None:
                    run, samples = backlog
                    await send(Data(samples=samples, run=run, backlog=True))
        except ConnectionLost:
            return  # unacknowledged: backlog of the next connection

    async def _report_state(self) -> None:
        """Tell the hub what the spool holds: at once, then whenever it changed, at most every
        `STATE_INTERVAL_S` (for `kmz agents`), with the agent process's `Vitals`."""
        last: AgentState | None = None
        while True:
            spool = self._spool
            uptime_s, cpu_pct, rss = self._vitals.read()
            state = AgentState(
                spool_depth=spool.depth,
                spool_oldest=spool.oldest,
                dropped=spool.dropped,
                uptime_s=uptime_s,
                cpu_pct=cpu_pct,
                rss_bytes=rss,
            )
            # The process's figures change every time: sent every interval.
            if state != last:
                await self._send(state)
                last = state
            await asyncio.sleep(STATE_INTERVAL_S)

    async def _send(self, message: Status | Reply | AgentState | AgentInfo | ConfigResult) -> None:
        connection = self._connection
        if connection is None or not connection.live:
            return
        try:
            await connection.send(message)
        except ConnectionLost:
            pass  # statuses go again on the next connection; a reply's command was answered for
        except ProtocolError as exc:
            _log.error("not sent", extra={"code": exc.code, "detail": exc.message})

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _permit(command: Command, clock: HubClock, connection: Connection[Any]) -> Permit:
    """When a command received now must no longer start."""
    deadline = command.deadline
    if deadline is not None and clock.synchronised:
        return Permit(
            remaining_s=lambda: clock.remaining(deadline, time.monotonic()),
            live=lambda: connection.live,
            socket_state=connection.socket_state,
        )
    # A hub that sends no deadline: the best the agent can do is count from
    # the moment it read the command.
    local_deadline = time.monotonic() + command.timeout_s
    return Permit(
        remaining_s=lambda: local_deadline - time.monotonic(),
        live=lambda: connection.live,
        socket_state=connection.socket_state,
    )
