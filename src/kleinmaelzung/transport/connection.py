"""The peer side of a link to the hub: connect, hello, welcome, a bounded send queue, reconnect.

Agents and clients reach the hub the same way::

    async with Connector(url, hello, limits=limits, timeouts=timeouts) as connector:
        connection = await connector.connect()      # one attempt; raises why it failed
        async for message in connection:            # the hub's messages, until it ends
            ...
        connection = await connector.reconnect()    # retries with backoff until welcomed

An attempt (TCP, WebSocket upgrade, hello, welcome) is bounded as a whole by
`Timeouts.handshake_s`. `reconnect()` waits between failed attempts as
`Backoff` says, and resets it once a hello is welcomed. It logs what is wrong
in words: a failure that cannot heal by itself (`Healing.PERMANENT`: wrong
path, not a hub, refused credentials, unsupported protocol) as an ERROR once,
retried at the slowest pace; a transient one (refused, timeout, DNS, a hub
restarting) as a WARNING on the first failure and every `REPEAT_EVERY`-th
after it, then "reconnected after N s". A `Healing.FINAL` failure (close code
4003: another connection took this agent's id) is raised, never retried.

The frames go through the protocol's `PeerConnection`, which checks outbound
messages too: a message this side must not send raises `ProtocolError` here,
before it reaches the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import aiohttp

from ..protocol import (
    AgentHello,
    ClientHello,
    CloseCode,
    ErrorCode,
    Limits,
    PeerConnection,
    ProtocolError,
    Received,
    Refused,
    Timeouts,
    Welcome,
    agent_connection,
    client_connection,
)
from .backoff import Backoff
from .errors import (
    ConnectionLost,
    HandshakeFailed,
    Healing,
    HubUnreachable,
    close_error_code,
    close_healing,
    close_in_words,
    describe,
    unreachable,
)
from .liveness import SocketPeek, SocketState
from .tls import Trust

_log = logging.getLogger(__name__)

M = TypeVar("M")

#: A transient outage is logged at its first failed attempt and every
#: REPEAT_EVERY-th after it (about every 5 min at the default 30 s pace).
REPEAT_EVERY = 10
#: How long a refused hello may wait for the hub's close frame, which carries
#: the close code that says whether to retry.
_CLOSE_FRAME_WAIT_S = 1.0

_FRAME_TYPES = (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)
_END_TYPES = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)

Failure = HubUnreachable | HandshakeFailed | ConnectionLost
"""Why an attempt to connect failed; each says whether waiting mends it (`healing`)."""


class Connection(Generic[M]):
    """One welcomed connection to the hub: iterate it for messages, `send()` to it.

    Frames go out through one writer task in order, from a queue bounded by
    `Limits.client_queue_frames`. Once the hub's side ends (the iteration
    stops), `live` is False and `lost` says how it ended.
    """

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        protocol: PeerConnection[M],
        *,
        url: str,
        limits: Limits,
        log_extra: dict[str, str],
        welcomed_at: float,
    ) -> None:
        assert protocol.welcome is not None
        self.url = url
        #: The hub's welcome: its name, session and clock.
        self.welcome: Welcome = protocol.welcome
        #: time.monotonic() when the welcome was read (the hub's clock was `welcome.clock`).
        self.welcomed_at = welcomed_at
        #: Whether the connection is open as far as this side has read.
        self.live = True
        #: How the hub's side ended the connection; None while open or if we closed it.
        self.lost: ConnectionLost | None = None
        self._ws = ws
        self._protocol = protocol
        self._log_extra = log_extra
        self._closing = False
        self._peek = SocketPeek(ws.get_extra_info("socket"))
        self._queue: asyncio.Queue[tuple[bytes, asyncio.Future[None] | None]] = asyncio.Queue(
            limits.client_queue_frames
        )
        self._writer = asyncio.create_task(self._write_forever(), name=f"kmz-send {url}")

    def __aiter__(self) -> Connection[M]:
        return self

    async def __anext__(self) -> M:
        """The hub's next message; unreadable frames are logged and skipped."""
        while self.live:
            msg = await self._ws.receive()
            if msg.type in _FRAME_TYPES:
                result = self._protocol.receive(msg.data)
                if isinstance(result, Received):
                    return result.message
                _log.warning(
                    "unreadable message from the hub",
                    extra={
                        **self._log_extra,
                        "code": result.error.code,
                        "detail": result.error.message,
                    },
                )
            elif msg.type in _END_TYPES:
                reason = msg.extra if msg.type is aiohttp.WSMsgType.CLOSE else ""
                if msg.type is aiohttp.WSMsgType.ERROR:
                    reason = describe(msg.data)
                self._end(str(reason or ""))
        raise StopAsyncIteration

    def socket_state(self) -> SocketState:
        """A peek at the socket: whether the hub's end has closed, before reading it."""
        return self._peek.state()

    async def send(self, message: Any) -> None:
        """Send `message` and return once it is written, waiting for room in the queue.

        Raises `ConnectionLost` if the connection ends before the frame is
        written, and `ProtocolError` if this side must not send the message.
        """
        if not self.live:
            raise self._gone()
        frame = self._frame(message)
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((frame, written))
        if not self.live and not written.done():
            raise self._gone()  # ended while we waited for room
        await written

    def send_soon(self, message: Any) -> bool:
        """Queue `message` without waiting; False if the connection ended or the queue is full."""
        if not self.live:
            return False
        frame = self._frame(message)
        try:
            self._queue.put_nowait((frame, None))
        except asyncio.QueueFull:
            return False
        return True

    async def close(self, code: int = aiohttp.WSCloseCode.OK) -> None:
        """Close from this side; the iteration then stops, and `lost` stays None."""
        self._closing = True
        self._end("")  # before any await: from now on nothing may count on this connection
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await self._ws.close(code=code)

    def _frame(self, message: Any) -> bytes:
        frame = self._protocol.send(message)
        if isinstance(frame, Refused):
            raise ProtocolError(frame.error.code_enum(), frame.error.message)
        return frame

    def _end(self, reason: str) -> None:
        if not self.live:
            return
        self.live = False
        self._protocol.close()
        self._peek.close()
        self._writer.cancel()
        code = self._ws.close_code
        if not self._closing:
            self.lost = ConnectionLost(
                f"the connection to the hub at {self.url} was lost "
                f"({close_in_words(code, reason)})",
                url=self.url,
                close_code=code,
                close_reason=reason,
                healing=close_healing(code),
            )
            if self.lost.healing is not Healing.FINAL:  # the caller says what a FINAL one means
                _log.warning(
                    "connection to the hub lost",
                    extra={**self._log_extra, "reason": close_in_words(code, reason)},
                )
        gone = self._gone()
        while not self._queue.empty():
            _, written = self._queue.get_nowait()
            if written is not None and not written.done():
                written.set_exception(gone)

    def _gone(self) -> ConnectionLost:
        return self.lost or ConnectionLost(
            f"the connection to the hub at {self.url} was closed", url=self.url
        )

    async def _write_forever(self) -> None:
        while True:
            frame, written = await self._queue.get()
            try:
                await self._ws.send_frame(frame, aiohttp.WSMsgType.TEXT)
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                # The socket broke under the frame; the reader sees the end.
                if written is not None and not written.done():
                    written.set_exception(
                        ConnectionLost(
                            f"the connection to the hub at {self.url} was lost: {describe(exc)}",
                            url=self.url,
                        )
                    )
                continue
            if written is not None and not written.done():
                written.set_result(None)


class Connector(Generic[M]):
    """Opens welcomed connections to a hub endpoint, and opens them again when they end.

    Given several endpoints (hubs sharing a bus and a log), a failed attempt
    moves on to the next at once; the backoff delay comes after each round
    of all of them. A connection that ended is tried again where it was
    first: a hub restarting is back within the round, a dead one refuses at
    once and the next is tried.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        hello: AgentHello | ClientHello,
        *,
        limits: Limits | None = None,
        timeouts: Timeouts | None = None,
        log_extra: dict[str, str] | None = None,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        trust: Trust | None = None,
    ) -> None:
        """`trust`: which certificates a wss:// hub may show (`transport.tls`)."""
        #: The ws(s):// URLs of the endpoints, in the order they are tried.
        self.urls: tuple[str, ...] = (url,) if isinstance(url, str) else tuple(url)
        if not self.urls:
            raise ValueError("a connector needs at least one URL")
        self._index = 0
        self._trust = trust or Trust()
        self._ssl = self._trust.ssl_context()
        self._hello = hello
        self._limits = limits or Limits()
        self._timeouts = timeouts or Timeouts()
        self._extra = dict(log_extra or {})
        self._backoff = Backoff(maximum_s=self._timeouts.reconnect_max_s, rng=rng)
        self._monotonic = monotonic
        self._session: aiohttp.ClientSession | None = None
        self._welcomed_before = False
        #: When the current outage began (first failure or loss), if in one.
        self._outage_since: float | None = None
        self._failures = 0
        self._reported: str | None = None

    @property
    def url(self) -> str:
        """The ws(s):// URL of the endpoint connected to, or tried next."""
        return self.urls[self._index]

    @property
    def _log_extra(self) -> dict[str, str]:
        return {"url": self.url, **self._extra}

    @property
    def hello(self) -> AgentHello | ClientHello:
        """The hello each new connection opens with; an agent whose instruments changed sets it."""
        return self._hello

    @hello.setter
    def hello(self, hello: AgentHello | ClientHello) -> None:
        self._hello = hello

    async def __aenter__(self) -> Connector[M]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the HTTP session; connections it opened end with it."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def connect(self) -> Connection[M]:
        """One attempt, bounded by `Timeouts.handshake_s`; raise a `Failure` saying why."""
        if self._session is None:
            self._session = self._trust.session()
        protocol: PeerConnection[M] = (
            agent_connection(self._limits)
            if isinstance(self._hello, AgentHello)
            else client_connection(self._limits)
        )
        hello = protocol.send(self._hello)
        if isinstance(hello, Refused):  # our bug: say so, not "unreachable"
            raise ProtocolError(hello.error.code_enum(), hello.error.message)
        timeout_s = self._timeouts.handshake_s
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    ws = await self._session.ws_connect(
                        self.url,
                        # Chain and host name; the pin, if any, is the session's.
                        ssl=self._ssl,
                        heartbeat=self._timeouts.ping_after_s,
                        # The hub may send up to max_hub_message_bytes (an
                        # instrument list); frames up to twice that reach the
                        # codec and get a typed error, beyond it aiohttp closes.
                        max_msg_size=2 * self._limits.max_hub_message_bytes,
                        # Closing waits for the hub's close frame; not forever.
                        timeout=aiohttp.ClientWSTimeout(ws_close=min(5.0, timeout_s)),
                    )
                except (aiohttp.ClientError, OSError) as exc:
                    raise unreachable(self.url, exc) from None
                await ws.send_frame(hello, aiohttp.WSMsgType.TEXT)
                await self._receive_welcome(ws, protocol)
                welcomed_at = time.monotonic()
        except TimeoutError:
            if ws is None:
                raise HubUnreachable(
                    f"no answer from the hub at {self.url} within {timeout_s:g} s (it accepted "
                    "no connection, or did not answer the WebSocket upgrade)",
                    url=self.url,
                ) from None
            await _abandon(ws)
            raise HandshakeFailed(
                ErrorCode.HELLO_EXPECTED,
                f"no welcome from the hub at {self.url} within {timeout_s:g} s",
                CloseCode.HANDSHAKE_TIMEOUT,
                url=self.url,
                healing=Healing.TRANSIENT,
            ) from None
        except (ConnectionError, aiohttp.ClientError) as exc:
            if ws is not None:
                await _abandon(ws)
            raise ConnectionLost(
                f"the connection to the hub at {self.url} was lost during the handshake: "
                f"{describe(exc)}",
                url=self.url,
            ) from None
        except BaseException:
            if ws is not None:
                await _abandon(ws)
            raise
        connection: Connection[M] = Connection(
            ws,
            protocol,
            url=self.url,
            limits=self._limits,
            log_extra=self._log_extra,
            welcomed_at=welcomed_at,
        )
        self._welcomed()
        return connection

    async def connect_any(self) -> Connection[M]:
        """One attempt at each endpoint in turn, from the current one: the first welcomed
        connection, else the last endpoint's failure (a FINAL one at once)."""
        for tried in range(1, len(self.urls) + 1):
            try:
                return await self.connect()
            except (HubUnreachable, HandshakeFailed, ConnectionLost) as exc:
                if exc.healing is Healing.FINAL or tried == len(self.urls):
                    raise
                _log.warning(
                    "hub unreachable, trying the next",
                    extra={**self._log_extra, "reason": str(exc)},
                )
                self._index = (self._index + 1) % len(self.urls)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def reconnect(self) -> Connection[M]:
        """Connect, retrying with backoff until welcomed; raise a FINAL failure.

        After a welcomed connection ended, the first attempt waits a short
        jittered delay too, so that agents do not all return at once.
        """
        if self._outage_since is None:
            self._outage_since = self._monotonic()
        if self._welcomed_before:
            await asyncio.sleep(self._backoff.next_delay())
        while True:
            try:
                connection = await self.connect()
            except (HubUnreachable, HandshakeFailed, ConnectionLost) as exc:
                if exc.healing is Healing.FINAL:
                    raise
                # The next endpoint at once; the backoff once a round.
                round_done = (self._failures + 1) % len(self.urls) == 0
                delay_s = self._failed(exc, round_done=round_done)
                self._index = (self._index + 1) % len(self.urls)
                if round_done:
                    await asyncio.sleep(delay_s)
                continue
            return connection

    def _failed(self, failure: Failure, *, round_done: bool = True) -> float:
        """Log a failed attempt as its kind deserves; return how long to wait
        (nothing before a round of all endpoints is done)."""
        self._failures += 1
        reason = str(failure)
        extra = {**self._log_extra, "reason": reason, "attempts": str(self._failures)}
        if failure.healing is Healing.PERMANENT:
            delay_s = self._backoff.slowest() if round_done else 0.0
            if reason != self._reported:
                self._reported = reason
                _log.error(
                    "cannot connect to the hub until this is fixed; retrying every "
                    f"{self._backoff.maximum_s:g} s",
                    extra=extra,
                )
            else:
                _log.debug("still cannot connect to the hub", extra=extra)
            return delay_s
        self._reported = None
        if self._failures == 1 or self._failures % REPEAT_EVERY == 0:
            since = self._monotonic() - (self._outage_since or self._monotonic())
            _log.warning(
                "hub unreachable" if self._failures == 1 else f"hub unreachable for {since:.0f} s",
                extra=extra,
            )
        else:
            _log.debug("hub still unreachable", extra=extra)
        return self._backoff.next_delay() if round_done else 0.0

    def _welcomed(self) -> None:
        self._backoff.reset()
        if self._outage_since is not None and (self._welcomed_before or self._failures):
            outage_s = self._monotonic() - self._outage_since
            _log.info(
                f"{'reconnected' if self._welcomed_before else 'connected'} after {outage_s:.1f} s",
                extra={**self._log_extra, "attempts": str(self._failures + 1)},
            )
        self._welcomed_before = True
        self._outage_since = None
        self._failures = 0
        self._reported = None

    async def _receive_welcome(
        self, ws: aiohttp.ClientWebSocketResponse, protocol: PeerConnection[M]
    ) -> None:
        msg = await ws.receive()
        if msg.type in _FRAME_TYPES:
            result = protocol.receive(msg.data)
            if isinstance(result, Received):
                return
            # The hub closes right after its refusal; its close code says
            # whether retrying can help (4003 after `duplicate_id`, say).
            close_code: int = result.close or 4000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_FRAME_WAIT_S):
                    follow = await ws.receive()
                    if follow.type is aiohttp.WSMsgType.CLOSE:
                        close_code = int(follow.data)
            await _abandon(ws)
            raise HandshakeFailed(
                result.error.code_enum(),
                result.error.message,
                close_code,
                url=self.url,
                healing=close_healing(close_code),
            )
        code = ws.close_code if msg.type is not aiohttp.WSMsgType.CLOSE else int(msg.data)
        reason = str(msg.extra or "") if msg.type is aiohttp.WSMsgType.CLOSE else ""
        error_code = close_error_code(code)
        if error_code is not None:
            raise HandshakeFailed(
                error_code,
                reason or close_in_words(code),
                code or 4000,
                url=self.url,
                healing=close_healing(code),
            )
        raise ConnectionLost(
            f"the hub at {self.url} closed the connection during the handshake "
            f"({close_in_words(code, reason)})",
            url=self.url,
            close_code=code,
            close_reason=reason,
        )


async def _abandon(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Close a connection that failed its handshake, bounded by its ws_close timeout."""
    with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError, TimeoutError):
        await ws.close()
