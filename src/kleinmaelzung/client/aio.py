"""The async client: subscribe to live data, send commands, list instruments."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Generator
from types import TracebackType
from typing import Any

import aiohttp
import msgspec

from ..protocol import (
    PROTOCOL_VERSION,
    ClientHello,
    CloseCode,
    Command,
    CommandError,
    Data,
    Error,
    ErrorCode,
    HandshakeError,
    InstrumentList,
    InstrumentRecord,
    KmzError,
    Limits,
    ListInstruments,
    Received,
    Reply,
    Sample,
    Status,
    Subscribe,
    Subscribed,
    Timeouts,
    Unsubscribe,
    client_connection,
    encode,
    matches,
)
from ..transport import CLIENT_PATH, backoff_delays, base_url, websocket_url
from .log import LogEntry, LogPage

_log = logging.getLogger(__name__)

Event = Sample | Status


class ConnectionLost(KmzError):
    """The connection to the hub ended while something was waiting on it."""


class HubUnreachable(KmzError):
    """The hub could not be reached at all."""


class RequestError(KmzError):
    """The hub refused a request (subscribe, list) with an error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _End:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Subscription:
    """Live samples (and, with status=True, status changes) of matching instruments.

    Iterate with `async for`. A consumer that falls behind loses the oldest
    events first; `missed` counts them.
    """

    def __init__(self, client: Client, patterns: tuple[str, ...], status: bool, size: int) -> None:
        self.patterns = patterns
        self.status = status
        #: Instruments matched when the hub confirmed the subscription.
        self.instruments: list[str] = []
        self.missed = 0
        self._client = client
        self._queue: asyncio.Queue[Event | _End] = asyncio.Queue(maxsize=size)
        self._started = False
        self._closed = False

    def wants(self, instrument: str) -> bool:
        """Whether events of `instrument` belong to this subscription."""
        return any(matches(p, instrument) for p in self.patterns)

    def put(self, event: Event | _End) -> None:
        """Queue an event, dropping the oldest if the consumer is behind."""
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.missed += 1
        self._queue.put_nowait(event)

    async def start(self) -> Subscription:
        """Ask the hub for the subscription (done by the first iteration anyway)."""
        if not self._started:
            self._started = True
            self._client._subscriptions.append(self)
            self.instruments = await self._client._subscribe(self.patterns)
        return self

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self.start().__await__()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        await self.start()
        if self._closed:
            raise StopAsyncIteration
        event = await self._queue.get()
        if isinstance(event, _End):
            self._closed = True
            raise event.error
        return event

    async def close(self) -> None:
        """Stop receiving; the hub forgets patterns no other subscription uses."""
        if self in self._client._subscriptions:
            self._client._subscriptions.remove(self)
            await self._client._unsubscribe(self.patterns)
        self._closed = True


class Client:
    """A connection to the hub, as `async with Client(url) as hub:`."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "",
        token: str | None = None,
        reconnect: bool = False,
        limits: Limits | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.url = base_url(url)
        self.name = name
        self._token = token
        self._reconnect = reconnect
        self._limits = limits or Limits()
        self._timeouts = timeouts or Timeouts()
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._subscriptions: list[Subscription] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection and complete the handshake."""
        self._session = aiohttp.ClientSession()
        try:
            await self._open()
        except BaseException:
            await self._session.close()
            raise
        self._reader = asyncio.create_task(self._read_forever(), name="kmz-client-reader")

    async def close(self) -> None:
        """Close the connection; waiting iterators and requests end with ConnectionLost."""
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._fail_all(ConnectionLost("client closed"), end_subscriptions=True)
        if self._session is not None:
            await self._session.close()

    def subscribe(self, *patterns: str, status: bool = False) -> Subscription:
        """Live samples of instruments matching the glob patterns (`kiln-*`)."""
        if not patterns:
            raise ValueError("subscribe() needs at least one instrument id or pattern")
        return Subscription(self, patterns, status, self._limits.client_queue_frames * 8)

    async def command(
        self, instrument: str, command: str, /, *, timeout_s: float = 5.0, **args: Any
    ) -> Any:
        """Run a command on an instrument; return its result or raise CommandError."""
        request_id = self._next_id()
        message = Command(
            id=request_id, instrument=instrument, name=command, args=args, timeout_s=timeout_s
        )
        reply = await self._request(message, timeout_s + 2.0)
        assert isinstance(reply, Reply)
        if not reply.ok:
            error = reply.error
            raise CommandError(
                error.code if error else "internal_error",
                error.message if error else "failed without an error description",
                instrument=instrument,
                name=command,
            )
        return reply.result

    async def instruments(self) -> list[InstrumentRecord]:
        """Every instrument the hub knows, with its state."""
        answer = await self._request(ListInstruments(id=self._next_id()), 10.0)
        assert isinstance(answer, InstrumentList)
        return answer.instruments

    # --- internals -----------------------------------------------------------

    def _next_id(self) -> str:
        return str(next(self._ids))

    async def _open(self) -> None:
        assert self._session is not None
        url = websocket_url(self.url, CLIENT_PATH)
        try:
            self._ws = await self._session.ws_connect(
                url,
                heartbeat=self._timeouts.heartbeat_s,
                max_msg_size=4 * self._limits.max_message_bytes,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise HubUnreachable(f"cannot reach the hub at {url}: {exc}") from None
        self._connection = client_connection(self._limits)
        await self._ws.send_bytes(
            encode(ClientHello(protocol=PROTOCOL_VERSION, token=self._token, name=self.name))
        )
        try:
            msg = await self._ws.receive(timeout=self._timeouts.handshake_s)
        except TimeoutError:
            raise HandshakeError(
                ErrorCode.HELLO_EXPECTED,
                "no welcome from the hub in time",
                CloseCode.HANDSHAKE_TIMEOUT,
            ) from None
        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            raise ConnectionLost(
                f"the hub closed the connection during the handshake ({msg.type.name})"
            )
        self._connection.receive(msg.data)  # raises HandshakeError if refused

    async def _read_forever(self) -> None:
        while True:
            assert self._ws is not None
            async for msg in self._ws:
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self._dispatch(self._connection.receive(msg.data))
            if self._closing:
                return
            lost = ConnectionLost(f"connection to the hub at {self.url} was lost")
            self._fail_all(lost, end_subscriptions=not self._reconnect)
            if not self._reconnect:
                return
            await self._reconnect_loop()

    async def _reconnect_loop(self) -> None:
        for delay in backoff_delays(maximum_s=self._timeouts.reconnect_max_s):
            await asyncio.sleep(delay)
            try:
                await self._open()
            except (TimeoutError, HubUnreachable, HandshakeError, ConnectionLost) as exc:
                _log.info("reconnect failed", extra={"url": self.url, "error": str(exc)})
                continue
            _log.info("reconnected", extra={"url": self.url})
            patterns = sorted({p for s in self._subscriptions for p in s.patterns})
            if patterns:
                # Not awaited through _request: this task is the reader.
                await self._send(Subscribe(id=self._next_id(), patterns=patterns))
            return

    def _dispatch(self, result: object) -> None:
        if not isinstance(result, Received):
            _log.warning("unreadable frame from the hub", extra={"detail": str(result)})
            return
        message = result.message
        if isinstance(message, Data):
            for sample in message.samples:
                for subscription in self._subscriptions:
                    if subscription.wants(sample.instrument):
                        subscription.put(sample)
        elif isinstance(message, Status):
            for subscription in self._subscriptions:
                if subscription.status and subscription.wants(message.instrument):
                    subscription.put(message)
        elif isinstance(message, Reply | Subscribed | InstrumentList | Error):
            future = self._pending.pop(message.id or "", None)
            if future is not None and not future.done():
                future.set_result(message)
            elif isinstance(message, Error):
                _log.warning(
                    "hub reported an error", extra={"code": message.code, "detail": message.message}
                )

    async def _send(self, message: msgspec.Struct) -> None:
        if self._ws is None or self._ws.closed:
            raise ConnectionLost(f"not connected to the hub at {self.url}")
        await self._ws.send_frame(encode(message), aiohttp.WSMsgType.TEXT)

    async def _request(self, message: Any, timeout_s: float) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message.id] = future
        try:
            await self._send(message)
            answer = await asyncio.wait_for(future, timeout_s)
        finally:
            self._pending.pop(message.id, None)
        if isinstance(answer, Error):
            if isinstance(message, Command):
                raise CommandError(
                    answer.code, answer.message, instrument=message.instrument, name=message.name
                )
            raise RequestError(answer.code, answer.message)
        return answer

    async def _subscribe(self, patterns: tuple[str, ...]) -> list[str]:
        answer = await self._request(Subscribe(id=self._next_id(), patterns=list(patterns)), 10.0)
        assert isinstance(answer, Subscribed)
        return [i for i in answer.instruments if any(matches(p, i) for p in patterns)]

    async def _unsubscribe(self, patterns: tuple[str, ...]) -> None:
        still_used = {p for s in self._subscriptions for p in s.patterns}
        unused = [p for p in patterns if p not in still_used]
        if unused and self._ws is not None and not self._ws.closed:
            await self._request(Unsubscribe(id=self._next_id(), patterns=unused), 10.0)

    def _fail_all(self, error: BaseException, *, end_subscriptions: bool) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        if end_subscriptions:
            for subscription in self._subscriptions:
                subscription.put(_End(error))


async def fetch_log(url: str, *, instrument: str | None = None, limit: int = 20) -> list[LogEntry]:
    """The newest traffic-log entries from the hub's HTTP API, newest first."""
    params: dict[str, str] = {"limit": str(limit)}
    if instrument:
        params["instrument"] = instrument
    endpoint = base_url(url) + "/api/log"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(endpoint, params=params) as response,
        ):
            body = await response.read()
            if response.status != 200:
                problem = msgspec.json.decode(body) if body.startswith(b"{") else {}
                raise RequestError(
                    problem.get("code", f"http_{response.status}"),
                    problem.get("message", body.decode(errors="replace")),
                )
    except (aiohttp.ClientError, OSError) as exc:
        raise HubUnreachable(f"cannot reach the hub at {endpoint}: {exc}") from None
    return msgspec.json.decode(body, type=LogPage).entries
