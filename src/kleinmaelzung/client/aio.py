"""The async client: subscribe to live data, send commands, list instruments.

The connection itself (handshake, bounded send queue, reconnecting with
backoff) is `transport.Connector`'s, shared with the agent. One reader task
routes what the hub sends: answers to the request waiting on their
correlation id, samples and status changes to every subscription whose
patterns match.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Coroutine, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from ..protocol import (
    PROTOCOL_VERSION,
    ClientHello,
    Command,
    CommandError,
    Data,
    Error,
    ErrorCode,
    Gap,
    HistoryResult,
    HubToClientMessage,
    InstrumentList,
    InstrumentRecord,
    Limits,
    ListInstruments,
    LogEntry,
    LogPage,
    LogResult,
    Missed,
    Position,
    ProtocolError,
    QueryHistory,
    QueryLog,
    Reply,
    Sample,
    Status,
    Subscribe,
    Subscribed,
    Timeouts,
    Unsubscribe,
    is_instrument_id,
    is_pattern,
)
from ..transport import CLIENT_PATH, Connection, Connector, Trust, base_url, websocket_url
from .credentials import token_for
from .errors import ConnectionLost, RequestError, RequestTimeout
from .history import (
    HistoryPoint,
    TimeLike,
    history_frame,
    history_points,
    history_request,
    load_history,
    require_pandas,
)
from .log_query import LogFilter, log_request, query_log
from .subscription import Subscription

if TYPE_CHECKING:
    import pandas

_log = logging.getLogger(__name__)

#: Events a subscription keeps for a consumer that is behind before it drops
#: the oldest (and says so with `Missed`). A reconnect's recovery arrives at
#: once: a minute of 20 instruments at 10 Hz is 12,000 samples (and 1024 here
#: lost the first of them in tests/e2e/test_delivery_stalled_client.py).
SUBSCRIPTION_QUEUE_EVENTS = 65_536

#: Deadline for requests the hub answers by itself (subscribe, list instruments).
REQUEST_TIMEOUT_S = 10.0
#: A command may take its own timeout at the instrument; the hub then answers
#: `command_timeout`. The slack covers the trip to and from the hub.
COMMAND_SLACK_S = 2.0

#: Deadline for a query of the log or a history: the database may take a while.
QUERY_TIMEOUT_S = 30.0
#: The protocol version that has `log_query` and `history_query`.
QUERIES_PROTOCOL = 4

_Answer = TypeVar("_Answer", Reply, Subscribed, InstrumentList, HistoryResult)
_Request = Subscribe | Unsubscribe | ListInstruments | Command | QueryHistory


class Client:
    """A connection to the hub, used as `async with Client(url) as hub:`.

    If the connection drops, waiting requests raise `ConnectionLost`, and so do
    subscriptions once they have yielded what had arrived. With
    `reconnect=True` the client instead reconnects with jittered backoff and
    subscribes again; samples sent while it was away are missed, not replayed.
    The first connection is never retried: `connect()` raises `HubUnreachable`.
    Without a `token`, the client presents the one `$KMZ_TOKEN` or the user's
    tokens file holds for this hub (`client.credentials`; ``""`` for none).
    An https:// or wss:// hub must show a certificate the system's CAs trust,
    or `ca_file` (a PEM file of the lab's CA; default `$KMZ_CA`) if given, and,
    with `pin_sha256` (default `$KMZ_PIN`), exactly that certificate
    (`transport.tls`); `TrustError` for a bad file or pin.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        name: str = "",
        token: str | None = None,
        reconnect: bool = False,
        limits: Limits | None = None,
        timeouts: Timeouts | None = None,
        queue_events: int = SUBSCRIPTION_QUEUE_EVENTS,
        ca_file: str | os.PathLike[str] | None = None,
        pin_sha256: str | None = None,
    ) -> None:
        """`queue_events`: how many events a subscription keeps for a consumer that is
        behind before it drops the oldest (and says so, with `Missed`). Several `url`s
        (hubs sharing a bus and a log): connecting tries each in turn, and a
        reconnecting client moves to the next when its hub fails."""
        #: The hubs' base URLs, http(s)://host:port, in the order they are tried.
        self.urls = [base_url(url)] if isinstance(url, str) else [base_url(u) for u in url]
        if not self.urls:
            raise ValueError("a client needs at least one hub URL")
        #: The base URL of the hub connected to (or tried first).
        self.url = self.urls[0]
        self._queue_events = queue_events
        self.name = name
        if token is None:  # the first hub's own, else one stored for another of them
            token = next((t for t in map(token_for, self.urls) if t is not None), None)
        self._token = token
        self._reconnect = reconnect
        self._trust = Trust.for_client(ca_file, pin_sha256)
        self._limits = limits or Limits()
        self._timeouts = timeouts or Timeouts()
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[HubToClientMessage]] = {}
        # Queries answered in several messages (`log`): what arrived, per id.
        self._streams: dict[str, asyncio.Queue[HubToClientMessage | ConnectionLost]] = {}
        self._subscriptions: list[Subscription] = []
        #: The newest samples delivered, per instrument, to recognise repeats.
        self._recent: dict[str, _RecentSamples] = {}
        self._connection: Connection[HubToClientMessage] | None = None
        self._connector: Connector[HubToClientMessage] | None = None
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
        return self._connection is not None and self._connection.live

    async def connect(self) -> None:
        """Open the connection and complete the handshake; raise if either fails.

        Raises `HubUnreachable`, `HandshakeError` (the hub refused the hello,
        or did not welcome it in time) or `ConnectionLost`; each says why.
        """
        if self._connector is not None:
            raise RuntimeError("this client is already connected")
        self._closing = False
        hello = ClientHello(protocol=PROTOCOL_VERSION, token=self._token, name=self.name)
        connector: Connector[HubToClientMessage] = Connector(
            [websocket_url(url, CLIENT_PATH) for url in self.urls],
            hello,
            limits=self._limits,
            timeouts=self._timeouts,
            log_extra={"client": self.name} if self.name else {},
            trust=self._trust,
        )
        try:
            self._connection = await connector.connect_any()
        except BaseException:
            await connector.aclose()
            raise
        self._connector = connector
        self.url = self.urls[connector.urls.index(connector.url)]
        self._reader = asyncio.create_task(self._read_forever(), name=f"kmz-client {self.url}")

    async def close(self) -> None:
        """Close the connection: waiting requests raise ConnectionLost, subscriptions stop."""
        self._closing = True
        for task in [*self._tasks, *([self._reader] if self._reader else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._reader = None
        if self._connection is not None:
            await self._connection.close()
        self._fail_pending("the client was closed")
        self._end_subscriptions(None)
        if self._connector is not None:
            await self._connector.aclose()
            self._connector = None

    def subscribe(
        self,
        *patterns: str,
        status: bool = False,
        overflow: Literal["latest", "disconnect"] = "latest",
        backlog: bool = False,
    ) -> Subscription:
        """Live samples of instruments matching the ids or glob patterns (`kiln-*`).

        With `status=True` it also yields status changes, and `Gap` and
        `Missed` events: samples dropped at the agent, and samples this
        client did not get because it fell behind (they are in the log).
        `overflow="disconnect"`: the hub closes the connection instead of
        dropping samples for this client (the client reconnects).
        `backlog=True`: also the samples agents send from their spools after
        an outage (taken earlier; compare `ts`), as they arrive.

        After a reconnect the client resumes each instrument where it left
        off: what the hub logged meanwhile comes first, then the live stream,
        with no sample twice (`Subscription.recovered` says whether all of it
        could be recovered).
        """
        if not patterns:
            raise ValueError("subscribe() needs at least one instrument id or pattern")
        bad = [p for p in patterns if not is_pattern(p)]
        if bad:
            raise ValueError(f"not an instrument id or pattern: {', '.join(map(repr, bad))}")
        return Subscription(
            self,
            patterns,
            status=status,
            queue_size=self._queue_events,
            overflow=overflow,
            backlog=backlog,
        )

    async def command(
        self,
        instrument: str,
        command: str,
        /,
        *,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        **args: Any,
    ) -> Any:
        """Run a command on an instrument; return its result or raise CommandError.

        With an `idempotency_key`, sending the same command again with the
        same key (say after `outcome_unknown`, or a lost connection) runs it
        at most once at the instrument and returns the first outcome.
        """
        timeout_s = self._timeouts.command_default_s if timeout_s is None else timeout_s
        if not is_instrument_id(instrument):
            raise ValueError(f"not an instrument id: {instrument!r}")
        if not 0 < timeout_s <= self._timeouts.command_max_s:
            raise ValueError(f"timeout_s must be in (0, {self._timeouts.command_max_s:g}]")
        message = Command(
            id=self._next_id(),
            instrument=instrument,
            name=command,
            args=args,
            timeout_s=timeout_s,
            key=idempotency_key,
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

    @overload
    async def history(
        self,
        instrument: str,
        *,
        since: TimeLike = ...,
        until: TimeLike | None = ...,
        channels: Iterable[str] = ...,
        every: float | str | None = ...,
        points: int | None = ...,
        as_frame: Literal[False] = ...,
    ) -> list[HistoryPoint]: ...
    @overload
    async def history(
        self,
        instrument: str,
        *,
        since: TimeLike = ...,
        until: TimeLike | None = ...,
        channels: Iterable[str] = ...,
        every: float | str | None = ...,
        points: int | None = ...,
        as_frame: Literal[True],
    ) -> pandas.DataFrame: ...
    async def history(
        self,
        instrument: str,
        *,
        since: TimeLike = "-1h",
        until: TimeLike | None = None,
        channels: Iterable[str] = (),
        every: float | str | None = None,
        points: int | None = None,
        as_frame: bool = False,
    ) -> list[HistoryPoint] | pandas.DataFrame:
        """An instrument's channels over a time range, downsampled by the hub's database.

        A list of `HistoryPoint` (per bucket of `every` seconds, or of
        `points` buckets over the range: the mean of each channel, with its
        count, min and max), or with `as_frame` a pandas DataFrame indexed by
        time (UTC), one column per channel (the extra ``data``). Times: UNIX
        seconds, datetimes, ``-24h``, ``2026-11-01T03:12`` (local time).
        Asked over this connection (`history_query`); a hub of protocol 3
        is asked over HTTP instead.
        """
        if not self._speaks_queries():
            return await load_history(
                self.url,
                instrument,
                since=since,
                until=until,
                channels=channels,
                every=every,
                points=points,
                as_frame=as_frame,
                token=self._token,
                ca_file=self._trust.ca_file,
                pin_sha256=self._trust.pin_sha256,
            )
        if as_frame:
            require_pandas()  # before asking the hub: the error names the extra at once
        request = history_request(
            self._next_id(),
            instrument,
            since=since,
            until=until,
            channels=channels,
            every=every,
            points=points,
        )
        answer = await self._request(request, HistoryResult, QUERY_TIMEOUT_S)
        return history_frame(answer.history) if as_frame else history_points(answer.history)

    async def log(
        self,
        where: LogFilter | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
        timeout_s: float = QUERY_TIMEOUT_S,
    ) -> LogPage:
        """Traffic-log entries matching `where`: at most `limit` (up to the hub's 10,000),
        newest first unless `where.oldest_first`; `next_cursor` continues from where they end.

        Asked over this connection (`log_query`), answered in as many frames as
        it takes; a hub of protocol 3 is asked over HTTP instead (`query_log`,
        whose page also stops at 1 MiB). The hub checks the same grant as
        for ``GET /api/log``: `RequestError` ``forbidden`` beyond it.
        """
        if not self._speaks_queries():
            return await query_log(
                self.url,
                where,
                limit=limit,
                cursor=cursor,
                timeout_s=timeout_s,
                token=self._token,
                ca_file=self._trust.ca_file,
                pin_sha256=self._trust.pin_sha256,
            )
        request = log_request(self._next_id(), where, limit=limit, cursor=cursor)
        entries: list[LogEntry] = []
        next_cursor: str | None = None
        for result in await self._collect(request, timeout_s):
            entries += result.entries
            next_cursor = result.next_cursor
        return LogPage(entries=entries, next_cursor=next_cursor)

    def _speaks_queries(self) -> bool:
        connection = self._connection
        return connection is not None and connection.welcome.protocol >= QUERIES_PROTOCOL

    async def _collect(self, request: QueryLog, timeout_s: float) -> list[LogResult]:
        """Send a query and gather its results up to the one marked done."""
        connection = self._connection
        if connection is None or not connection.live:
            raise ConnectionLost(f"not connected to the hub at {self.url}")
        queue: asyncio.Queue[HubToClientMessage | ConnectionLost] = asyncio.Queue()
        self._streams[request.id] = queue
        results: list[LogResult] = []
        try:
            await connection.send(request)
            async with asyncio.timeout(timeout_s):
                while True:
                    item = await queue.get()
                    if isinstance(item, ConnectionLost):
                        raise item
                    if isinstance(item, Error):
                        raise RequestError(item.code, item.message)
                    if not isinstance(item, LogResult):
                        raise ProtocolError(
                            ErrorCode.UNEXPECTED_MESSAGE,
                            f"the hub answered log_query with {item.__struct_config__.tag}",
                        )
                    results.append(item)
                    if item.done:
                        return results
        except TimeoutError:
            raise RequestTimeout(
                f"no whole answer from the hub at {self.url} to log_query within {timeout_s:g} s"
            ) from None
        finally:
            self._streams.pop(request.id, None)

    # --- connection ----------------------------------------------------------

    def _next_id(self) -> str:
        return str(next(self._ids))

    async def _read_forever(self) -> None:
        try:
            while self._connection is not None:
                connection = self._connection
                async for message in connection:
                    self._dispatch(message)
                if self._closing:
                    return
                lost = connection.lost
                reason = str(lost) if lost else f"the connection to the hub at {self.url} closed"
                self._fail_pending(reason)
                if not self._reconnect:
                    self._end_subscriptions(reason)
                    return
                assert self._connector is not None
                # Backoff, logging what is wrong, reset once welcomed: the transport's.
                self._connection = await self._connector.reconnect()
                self.url = self.urls[self._connector.urls.index(self._connector.url)]
                if self._subscriptions:
                    # Not awaited here: this task must go on reading to get the answer.
                    self._spawn(self._subscribe_again())
        except Exception:  # a bug here must not leave requests waiting forever
            _log.exception("client reader failed", extra={"url": self.url})
            self._fail_pending("the client's reader failed; see the log")
            self._end_subscriptions("the client's reader failed; see the log")

    async def _subscribe_again(self) -> None:
        patterns = sorted({p for s in self._subscriptions for p in s.patterns})
        strict = any(s.overflow == "disconnect" for s in self._subscriptions)
        # Resume each instrument where it left off: what the hub logged
        # meanwhile comes first, then the live stream (issue 9).
        since = {
            instrument: recent.position
            for instrument, recent in self._recent.items()
            if recent.position is not None and any(s.wants(instrument) for s in self._subscriptions)
        }
        request = Subscribe(
            id=self._next_id(),
            patterns=patterns,
            overflow="disconnect" if strict else "latest",
            since=since,
            backlog=any(s.backlog for s in self._subscriptions),
        )
        try:
            answer = await self._request(request, Subscribed, REQUEST_TIMEOUT_S)
        except ConnectionLost:
            return  # the next reconnect tries again
        except (RequestTimeout, RequestError, ProtocolError) as exc:
            # Connected but not subscribed would be silent forever: start over.
            _log.warning("subscribing again failed", extra={"url": self.url, "error": str(exc)})
            if self._connection is not None:
                await self._connection.close()
            return
        if answer.not_recovered:
            _log.warning(
                "reconnected; what these instruments measured meanwhile could not all be "
                "recovered from the hub's log (see kmz log)",
                extra={"url": self.url, "instruments": ", ".join(answer.not_recovered)},
            )
        for subscription in self._subscriptions:
            subscription.instruments = [i for i in answer.instruments if subscription.wants(i)]
            subscription.recovered = answer.recovered

    def _seen_before(self, run: str, sample: Sample) -> bool:
        """Whether this very sample was delivered already; note it if not."""
        window = self._recent.get(sample.instrument)
        if window is None:
            window = self._recent[sample.instrument] = _RecentSamples()
        return window.seen(run, sample)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- routing -------------------------------------------------------------

    def _dispatch(self, message: HubToClientMessage) -> None:
        if isinstance(message, Data):
            run = message.run or ""
            for sample in message.samples:
                if self._seen_before(run, sample):
                    continue
                for subscription in self._subscriptions:
                    if subscription.wants(sample.instrument):
                        subscription._deliver(sample, run)
        elif isinstance(message, Status | Gap | Missed):
            for subscription in self._subscriptions:
                if subscription.status and subscription.wants(message.instrument):
                    subscription._deliver(message)
        elif (
            isinstance(message, LogResult | Error)
            and message.id is not None
            and message.id in self._streams
        ):
            self._streams[message.id].put_nowait(message)
        elif isinstance(message, Reply | Subscribed | InstrumentList | HistoryResult | Error):
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
        connection = self._connection
        if connection is None or not connection.live:
            raise ConnectionLost(f"not connected to the hub at {self.url}")
        future: asyncio.Future[HubToClientMessage] = asyncio.get_running_loop().create_future()
        self._pending[message.id] = future
        kind = message.__struct_config__.tag
        sent = False
        try:
            await connection.send(message)  # returns once written
            sent = True
            async with asyncio.timeout(timeout_s):
                answer = await future
        except TimeoutError:
            if isinstance(message, Command):
                raise _outcome_unknown(message, f"no answer within {timeout_s:g} s") from None
            raise RequestTimeout(
                f"no answer from the hub at {self.url} to {kind} within {timeout_s:g} s"
            ) from None
        except ConnectionLost:
            # The socket closed under us. A command that left may have reached
            # the instrument: its outcome is unknown, not a failure.
            if sent and isinstance(message, Command):
                raise _outcome_unknown(
                    message, f"the connection to the hub at {self.url} was lost"
                ) from None
            raise
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
        for queue in self._streams.values():
            queue.put_nowait(ConnectionLost(reason))
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
        request = Subscribe(
            id=self._next_id(),
            patterns=list(subscription.patterns),
            overflow=subscription.overflow,
            backlog=subscription.backlog,
        )
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


class _RecentSamples:
    """The newest seq delivered per run of one instrument: a repeat is at or below it.

    The hub forwards a sample before its log commits it; after a hub crash
    the agent sends again what was not acknowledged, and the next hub, which
    never logged it, forwards it again, with its run. Seqs only grow within
    a run, so (run, seq) recognises every repeat exactly. A few runs are live
    at once (an agent's backlog beside its current run); the oldest of more
    than `runs` is forgotten.
    """

    def __init__(self, runs: int = 16) -> None:
        self._runs = runs
        self._newest: dict[str, int] = {}
        #: The last sample delivered: where a reconnect resumes.
        self.position: Position | None = None

    def seen(self, run: str, sample: Sample) -> bool:
        """Whether (run, seq) was delivered already; remember it if not."""
        seq = sample.seq
        newest = self._newest.get(run)
        if newest is not None and seq <= newest:
            return True
        self._newest[run] = seq
        if newest is None and len(self._newest) > self._runs:
            del self._newest[next(iter(self._newest))]
        if self.position is None or sample.ts >= self.position.ts:
            self.position = Position(run=run or None, seq=seq, ts=sample.ts)
        return False


def _outcome_unknown(command: Command, what: str) -> CommandError:
    return CommandError(
        ErrorCode.OUTCOME_UNKNOWN,
        f"{what} after the command was sent: it may have run, and it will not start "
        f"after its deadline ({command.timeout_s:g} s after it was sent)",
        instrument=command.instrument,
        name=command.name,
    )
