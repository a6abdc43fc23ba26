"""A blocking wrapper around the async client, for scripts and notebooks."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..protocol import InstrumentRecord, Limits, LogPage, Status, Timeouts
from .aio import Client
from .history import HistoryPoint, TimeLike, load_history
from .log_query import LogFilter
from .subscription import Event, Subscription

if TYPE_CHECKING:
    import pandas

T = TypeVar("T")


class SyncClient:
    """`with SyncClient(url) as hub:` then `hub.command(...)`, `for s in hub.subscribe(...)`.

    The async `Client` runs on a private event loop in a background thread, so
    this works in plain scripts and inside Jupyter, whose own loop is already
    running. Options are those of `Client`.
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
        ca_file: str | os.PathLike[str] | None = None,
        pin_sha256: str | None = None,
    ) -> None:
        # Built first: a bad URL (or CA file) raises here, before there is a thread to stop.
        self._client = Client(
            url,
            name=name,
            token=token,
            reconnect=reconnect,
            limits=limits,
            timeouts=timeouts,
            ca_file=ca_file,
            pin_sha256=pin_sha256,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kmz-sync-client", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> SyncClient:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The hub's base URL."""
        return self._client.url

    def connect(self) -> None:
        """Connect and complete the handshake; on failure the background thread stops."""
        try:
            self._call(self._client.connect())
        except BaseException:
            self._stop_loop()
            raise

    def close(self) -> None:
        """Close the connection and stop the background thread."""
        if self._loop.is_closed():
            return
        try:
            self._call(self._client.close(), timeout_s=15)
        finally:
            self._stop_loop()

    def command(
        self,
        instrument: str,
        command: str,
        /,
        *,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        **args: Any,
    ) -> Any:
        """Run a command; return its result or raise CommandError (see `Client.command`)."""
        return self._call(
            self._client.command(
                instrument, command, timeout_s=timeout_s, idempotency_key=idempotency_key, **args
            )
        )

    def instruments(self) -> list[InstrumentRecord]:
        """Every instrument the hub knows."""
        return self._call(self._client.instruments())

    def history(
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
        """An instrument's downsampled history (see `Client.history`)."""
        return self._call(
            load_history(
                self._client.url,
                instrument,
                since=since,
                until=until,
                channels=channels,
                every=every,
                points=points,
                as_frame=as_frame,
                token=self._client._token,
                ca_file=self._client._trust.ca_file,
                pin_sha256=self._client._trust.pin_sha256,
            )
        )

    def log(
        self, where: LogFilter | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> LogPage:
        """Traffic-log entries matching `where` (see `Client.log`)."""
        return self._call(self._client.log(where, limit=limit, cursor=cursor))

    def subscribe(
        self,
        *patterns: str,
        count: int | None = None,
        status: bool = False,
        timeout_s: float | None = None,
        overflow: Literal["latest", "disconnect"] = "latest",
    ) -> Iterator[Event]:
        """Yield live events of matching instruments; stop after `count` samples if given.

        The subscription starts at this call; `timeout_s` bounds the wait for
        each event (TimeoutError).
        """

        async def start() -> Subscription:
            return await self._client.subscribe(*patterns, status=status, overflow=overflow)

        subscription = self._call(start())
        return self._iterate(subscription, count, timeout_s)

    def _iterate(
        self, subscription: Subscription, count: int | None, timeout_s: float | None
    ) -> Iterator[Event]:
        samples = 0
        try:
            while count is None or samples < count:
                try:
                    event = self._call(subscription.__anext__(), timeout_s)
                except StopAsyncIteration:
                    return
                if not isinstance(event, Status):
                    samples += 1
                yield event
        finally:
            if self._thread.is_alive():
                self._call(subscription.close(), timeout_s=15)

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            if future.done():  # the coroutine's own timeout, e.g. RequestTimeout
                raise
            future.cancel()
            raise TimeoutError(
                f"nothing from the hub at {self.url} within {timeout_s:g} s"
            ) from None
        except BaseException:
            # Ctrl-C in the caller's thread: do not leave the coroutine running.
            future.cancel()
            raise

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=15)
        if not self._thread.is_alive():
            self._loop.close()
