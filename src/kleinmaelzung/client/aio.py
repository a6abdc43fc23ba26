"""The async client: subscribe to live data, send commands, list instruments.

One reader task per connection feeds frames to the protocol's sans-I/O
`PeerConnection` and routes what comes out: answers to the request waiting on
their correlation id, samples and status changes to every subscription whose
patterns match.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

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
    HubToClientMessage,
    InstrumentList,
    InstrumentRecord,
    Limits,
    ListInstruments,
    PeerConnection,
    ProtocolError,
    Received,
    Refused,
    Reply,
    Status,
    Subscribe,
    Subscribed,
    Timeouts,
    Unsubscribe,
    client_connection,
    encode,
    is_instrument_id,
    is_pattern,
)
from ..transport import CLIENT_PATH, backoff_delays, base_url, websocket_url
from .errors import ConnectionLost, HubUnreachable, RequestError, RequestTimeout, reaching
from .subscription import Subscription

_log = logging.getLogger(__name__)

#: Deadline for requests the hub answers by itself (subscribe, list instruments).
REQUEST_TIMEOUT_S = 10.0
#: A command may take its own timeout at the instrument; the hub then answers
#: `command_timeout`. The slack covers the trip to and from the hub.
COMMAND_SLACK_S = 2.0

_Answer = TypeVar("_Answer", Reply, Subscribed, InstrumentList)
_Request = Subscribe | Unsubscribe | ListInstruments | Command


class Client:
    """A connection to the hub, used as `async with Client(url) as hub:`.

    If the connection drops, waiting requests raise `ConnectionLost`, and so do
    subscriptions once they have yielded what had arrived. With
    `reconnect=True` the client instead reconnects with jittered backoff and
    subscribes again; samples sent while it was away are missed, not replayed.
    The first connection is never retried: `connect()` raises `HubUnreachable`.
    """

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
        #: The hub's base URL, http(s)://host:port.
        self.url = base_url(url)
        self.name = name
        self._token = token
        self._reconnect = reconnect
        self._limits = limits or Limits()
        self._timeouts = timeouts or Timeouts()
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[HubToClientMessage]] = {}
        self._subscriptions: list[Subscription] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connection: PeerConnection[HubToClientMessage] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
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

    @property
    def connected(self) -> bool:
        """Whether the connection to the hub is open right now."""
        return self._ws is not None and not self._ws.closed

    async def connect(self) -> None:
        """Open the connection and complete the handshake; raise if either fails."""
        if self._session is not None:
            raise RuntimeError("this client is already connected")
        self._closing = False
        self._session = aiohttp.ClientSession()
        try:
            await self._open()
        except BaseException:
            await self._session.close()
            self._session = None
            raise
        self._reader = asyncio.create_task(self._read_forever(), name=f"kmz-client {self.url}")

    async def close(self) -> None:
        """Close the connection: waiting requests raise ConnectionLost, subscriptions stop."""
        self._closing = True
        for task in [*self._tasks, *([self._reader] if self._reader else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._reader = None
        if self._ws is not None:
            await self._ws.close()
        self._fail_pending("the client was closed")
        self._end_subscriptions(None)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def subscribe(self, *patterns: str, status: bool = False) -> Subscription:
        """Live samples of instruments matching the ids or glob patterns (`kiln-*`)."""
        if not patterns:
            raise ValueError("subscribe() needs at least one instrument id or pattern")
        bad = [p for p in patterns if not is_pattern(p)]
        if bad:
            raise ValueError(f"not an instrument id or pattern: {', '.join(map(repr, bad))}")
        return Subscription(
            self, patterns, status=status, queue_size=self._limits.client_queue_frames
        )

    async def command(
        self, instrument: str, command: str, /, *, timeout_s: float | None = None, **args: Any
    ) -> Any:
        """Run a command on an instrument; return its result or raise CommandError."""
        timeout_s = self._timeouts.command_default_s if timeout_s is None else timeout_s
        if not is_instrument_id(instrument):
            raise ValueError(f"not an instrument id: {instrument!r}")
        if not 0 < timeout_s <= self._timeouts.command_max_s:
            raise ValueError(f"timeout_s must be in (0, {self._timeouts.command_max_s:g}]")
        message = Command(
            id=self._next_id(), instrument=instrument, name=command, args=args, timeout_s=timeout_s
        )
        try:
            reply = await self._request(message, Reply, timeout_s + COMMAND_SLACK_S)
        except RequestError as exc:  # refused by the hub before reaching the instrument
            raise CommandError(exc.code, exc.message, instrument=instrument, name=command) from None
        if not reply.ok:
            error = reply.error
            raise CommandError(
                error.code if error else ErrorCode.INTERNAL_ERROR,
                error.message if error else "failed without saying why",
                instrument=instrument,
                name=command,
            )
        return reply.result

    async def instruments(self) -> list[InstrumentRecord]:
        """Every instrument the hub knows, with its state."""
        answer = await self._request(
            ListInstruments(id=self._next_id()), InstrumentList, REQUEST_TIMEOUT_S
        )
        return answer.instruments

    # --- connection ----------------------------------------------------------

    def _next_id(self) -> str:
        return str(next(self._ids))

    async def _open(self) -> None:
        """Connect and shake hands; on success the new socket replaces the old one."""
        assert self._session is not None
        url = websocket_url(self.url, CLIENT_PATH)
        deadline_s = self._timeouts.handshake_s
        with reaching(url, deadline_s):
            async with asyncio.timeout(deadline_s):
                ws = await self._session.ws_connect(
                    url,
                    heartbeat=self._timeouts.heartbeat_s,
                    max_msg_size=4 * self._limits.max_message_bytes,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                )
        connection = client_connection(self._limits)
        try:
            hello = ClientHello(protocol=PROTOCOL_VERSION, token=self._token, name=self.name)
            await ws.send_frame(encode(hello), aiohttp.WSMsgType.TEXT)
            msg = await ws.receive(timeout=deadline_s)
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise ConnectionLost(f"the hub at {url} closed the connection during the handshake")
            connection.receive(msg.data)  # raises HandshakeError unless it is a welcome
        except TimeoutError:
            await ws.close()
            raise HandshakeError(
                ErrorCode.HELLO_EXPECTED,
                f"no welcome from the hub at {url} within {deadline_s:g} s",
                CloseCode.HANDSHAKE_TIMEOUT,
            ) from None
        except BaseException:
            await ws.close()
            raise
        self._ws, self._connection = ws, connection

    async def _read_forever(self) -> None:
        try:
            while await self._read_until_closed():
                if not self._reconnect:
                    return
                await self._reconnect_with_backoff()
        except Exception:  # a bug here must not leave requests waiting forever
            _log.exception("client reader failed", extra={"url": self.url})
            self._fail_pending("the client's reader failed; see the log")
            self._end_subscriptions("the client's reader failed; see the log")

    async def _read_until_closed(self) -> bool:
        """Dispatch frames until the socket closes; return whether that was unexpected."""
        assert self._ws is not None and self._connection is not None
        ws, connection = self._ws, self._connection
        async for msg in ws:
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self._dispatch(connection.receive(msg.data))
        if self._closing:
            return False
        code = ws.close_code
        why = f" (close code {code}{_close_name(code)})" if code is not None else ""
        reason = f"the connection to the hub at {self.url} was lost{why}"
        _log.warning("connection lost", extra={"url": self.url, "close_code": code})
        self._fail_pending(reason)
        if not self._reconnect:
            self._end_subscriptions(reason)
        return True

    async def _reconnect_with_backoff(self) -> None:
        for delay_s in backoff_delays(maximum_s=self._timeouts.reconnect_max_s):
            await asyncio.sleep(delay_s)
            try:
                await self._open()
            except (HubUnreachable, ConnectionLost, ProtocolError) as exc:
                _log.info("reconnect failed", extra={"url": self.url, "error": str(exc)})
                continue
            _log.info("reconnected", extra={"url": self.url})
            if self._subscriptions:
                # Not awaited here: this task must go on reading to get the answer.
                self._spawn(self._subscribe_again())
            return

    async def _subscribe_again(self) -> None:
        patterns = sorted({p for s in self._subscriptions for p in s.patterns})
        try:
            answer = await self._request(
                Subscribe(id=self._next_id(), patterns=patterns), Subscribed, REQUEST_TIMEOUT_S
            )
        except ConnectionLost:
            return  # the next reconnect tries again
        except (RequestTimeout, RequestError, ProtocolError) as exc:
            # Connected but not subscribed would be silent forever: start over.
            _log.warning("subscribing again failed", extra={"url": self.url, "error": str(exc)})
            if self._ws is not None:
                await self._ws.close()
            return
        for subscription in self._subscriptions:
            subscription.instruments = [i for i in answer.instruments if subscription.wants(i)]

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- routing -------------------------------------------------------------

    def _dispatch(self, result: Received[HubToClientMessage] | Refused) -> None:
        if isinstance(result, Refused):
            error = result.error
            _log.warning(
                "unreadable message from the hub",
                extra={"url": self.url, "code": error.code, "detail": error.message},
            )
            return
        message = result.message
        if isinstance(message, Data):
            for sample in message.samples:
                for subscription in self._subscriptions:
                    if subscription.wants(sample.instrument):
                        subscription._deliver(sample)
        elif isinstance(message, Status):
            for subscription in self._subscriptions:
                if subscription.status and subscription.wants(message.instrument):
                    subscription._deliver(message)
        elif isinstance(message, Reply | Subscribed | InstrumentList | Error):
            future = self._pending.pop(message.id, None) if message.id else None
            if future is not None:
                if not future.done():
                    future.set_result(message)
            elif isinstance(message, Error):
                _log.warning(
                    "hub reported an error",
                    extra={"url": self.url, "code": message.code, "detail": message.message},
                )
            else:  # the answer to a request that gave up waiting
                _log.debug("late answer", extra={"url": self.url, "id": message.id})
        else:
            _log.debug("ignored message", extra={"url": self.url, "type": type(message).__name__})

    async def _request(
        self, message: _Request, expected: type[_Answer], timeout_s: float
    ) -> _Answer:
        """Send a request and wait for the answer with its correlation id."""
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionLost(f"not connected to the hub at {self.url}")
        future: asyncio.Future[HubToClientMessage] = asyncio.get_running_loop().create_future()
        self._pending[message.id] = future
        kind = message.__struct_config__.tag
        sent = False
        try:
            await ws.send_frame(encode(message), aiohttp.WSMsgType.TEXT)
            sent = True
            async with asyncio.timeout(timeout_s):
                answer = await future
        except TimeoutError:
            if isinstance(message, Command):
                raise _outcome_unknown(message, f"no answer within {timeout_s:g} s") from None
            raise RequestTimeout(
                f"no answer from the hub at {self.url} to {kind} within {timeout_s:g} s"
            ) from None
        except (aiohttp.ClientError, ConnectionError, ConnectionLost) as exc:
            # The socket closed under us. A command that left may have reached
            # the instrument: its outcome is unknown, not a failure.
            if sent and isinstance(message, Command):
                raise _outcome_unknown(
                    message, f"the connection to the hub at {self.url} was lost"
                ) from None
            if isinstance(exc, ConnectionLost):
                raise
            raise ConnectionLost(
                f"the connection to the hub at {self.url} was lost: {exc}"
            ) from None
        finally:
            self._pending.pop(message.id, None)
        if isinstance(answer, Error):
            raise RequestError(answer.code, answer.message)
        if not isinstance(answer, expected):
            raise ProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE,
                f"the hub answered {kind} with {answer.__struct_config__.tag}",
            )
        return answer

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(reason))

    def _end_subscriptions(self, reason: str | None) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription._end(None if reason is None else ConnectionLost(reason))

    # --- called by Subscription ----------------------------------------------

    async def _start_subscription(self, subscription: Subscription) -> list[str]:
        # Listed before asking, so no sample sent right after the answer is lost.
        if subscription not in self._subscriptions:
            self._subscriptions.append(subscription)
        request = Subscribe(id=self._next_id(), patterns=list(subscription.patterns))
        try:
            answer = await self._request(request, Subscribed, REQUEST_TIMEOUT_S)
        except BaseException:
            with contextlib.suppress(ValueError):
                self._subscriptions.remove(subscription)
            raise
        return [i for i in answer.instruments if subscription.wants(i)]

    async def _end_subscription(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)
        still_used = {p for s in self._subscriptions for p in s.patterns}
        unused = sorted(set(subscription.patterns) - still_used)
        if unused and self.connected:
            request = Unsubscribe(id=self._next_id(), patterns=unused)
            # Best effort: a hub that is gone has forgotten the patterns anyway.
            with contextlib.suppress(ConnectionLost, RequestTimeout):
                await self._request(request, Subscribed, REQUEST_TIMEOUT_S)


def _outcome_unknown(command: Command, what: str) -> CommandError:
    return CommandError(
        ErrorCode.OUTCOME_UNKNOWN,
        f"{what} after the command was sent: it may have run, and it will not start "
        f"after its deadline ({command.timeout_s:g} s after it was sent)",
        instrument=command.instrument,
        name=command.name,
    )


def _close_name(code: int) -> str:
    try:
        return " " + CloseCode(code).name.lower().replace("_", " ")
    except ValueError:
        return ""
