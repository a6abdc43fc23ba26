"""A blocking wrapper around the async client, for scripts and notebooks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from ..protocol import InstrumentRecord, Sample, Status
from .aio import Client

T = TypeVar("T")


class SyncClient:
    """`with SyncClient(url) as hub:` then `hub.command(...)`, `for s in hub.subscribe(...)`.

    The async client runs on a private event loop in a background thread, so
    this works inside Jupyter, whose own loop is already running.
    """

    def __init__(self, url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kmz-sync", daemon=True)
        self._thread.start()
        self._client = Client(url, **options)

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

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

    def connect(self) -> None:
        """Connect and complete the handshake."""
        self._call(self._client.connect())

    def close(self) -> None:
        """Close the connection and stop the background loop."""
        try:
            self._call(self._client.close(), timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def command(
        self, instrument: str, command: str, /, *, timeout_s: float = 5.0, **args: Any
    ) -> Any:
        """Run a command; return its result or raise CommandError."""
        return self._call(self._client.command(instrument, command, timeout_s=timeout_s, **args))

    def instruments(self) -> list[InstrumentRecord]:
        """Every instrument the hub knows."""
        return self._call(self._client.instruments())

    def subscribe(
        self,
        *patterns: str,
        count: int | None = None,
        status: bool = False,
        timeout: float | None = None,
    ) -> Iterator[Sample | Status]:
        """Yield live events of matching instruments; stop after `count` samples if given."""

        async def make() -> Any:
            return await self._client.subscribe(*patterns, status=status)

        subscription = self._call(make())
        seen = 0
        try:
            while count is None or seen < count:
                event = self._call(subscription.__anext__(), timeout)
                if isinstance(event, Sample):
                    seen += 1
                yield event
        finally:
            if not self._loop.is_closed() and self._loop.is_running():
                self._call(subscription.close(), timeout=10)
