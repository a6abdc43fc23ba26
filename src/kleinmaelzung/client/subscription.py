"""One consumer's live events: a bounded queue that drops the oldest when it overflows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

from ..protocol import Gap, Missed, Sample, Status, matches

Event = Sample | Status | Gap | Missed
"""What a subscription yields: samples; with status=True also status changes,
gaps (samples dropped at the agent: they will never arrive) and misses
(samples this client fell too far behind to get: they are in the log)."""


class _Owner(Protocol):
    """The client side a subscription needs: tell the hub it starts and ends."""

    async def _start_subscription(self, subscription: Subscription) -> list[str]: ...

    async def _end_subscription(self, subscription: Subscription) -> None: ...


@dataclass(frozen=True, slots=True)
class _End:
    """Queued last: `error` is raised to the consumer, or None to stop iterating."""

    error: BaseException | None


class Subscription:
    """Live samples (and, with status=True, status changes) of matching instruments.

    Iterate with `async for`, or `await` it first to know which instruments
    matched. A consumer that falls behind loses the oldest events first, so
    what it sees stays current; `missed` counts what it lost. Events of one
    instrument arrive in the order the hub sent them.
    """

    def __init__(
        self,
        owner: _Owner,
        patterns: tuple[str, ...],
        *,
        status: bool,
        queue_size: int,
        overflow: Literal["latest", "disconnect"] = "latest",
        backlog: bool = False,
    ) -> None:
        self.patterns = patterns
        self.status = status
        #: What the hub does when this client falls behind (see `Client.subscribe`).
        self.overflow = overflow
        #: Whether spooled samples are sent as well (see `Client.subscribe`).
        self.backlog = backlog
        #: After the latest reconnect: whether all that was missed meanwhile
        #: came from the hub's log (None before any reconnect).
        self.recovered: bool | None = None
        #: Instruments the patterns matched when the hub confirmed the subscription.
        self.instruments: list[str] = []
        #: Events dropped because the consumer fell behind.
        self.missed = 0
        self._owner = owner
        # With each sample its run (b"" for other events), to name what is dropped.
        self._queue: asyncio.Queue[tuple[Event | _End, str]] = asyncio.Queue(maxsize=queue_size)
        # Samples dropped and not yet told: (instrument, run) -> [first, last, count].
        self._dropped: dict[tuple[str, str], list[int]] = {}
        # Matching is a glob per pattern; remember the answer per instrument.
        self._wanted: dict[str, bool] = {}
        self._started = False
        self._closed = False

    def wants(self, instrument: str) -> bool:
        """Tell whether events of `instrument` belong to this subscription."""
        wanted = self._wanted.get(instrument)
        if wanted is None:
            wanted = self._wanted[instrument] = any(matches(p, instrument) for p in self.patterns)
        return wanted

    async def start(self) -> Subscription:
        """Ask the hub for the subscription; the first iteration does this anyway."""
        if not self._started and not self._closed:
            self.instruments = await self._owner._start_subscription(self)
            self._started = True
        return self

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self.start().__await__()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        await self.start()
        if self._dropped and self.status:
            (instrument, run), (first, last, count) = next(iter(self._dropped.items()))
            del self._dropped[(instrument, run)]
            return Missed(
                instrument=instrument,
                run=run or None,
                first_seq=first,
                last_seq=last,
                count=count,
            )
        event, _ = await self._queue.get()
        if isinstance(event, _End):
            self._closed = True
            if event.error is None:
                raise StopAsyncIteration
            raise event.error
        return event

    async def close(self) -> None:
        """Stop receiving; a consumer waiting in `async for` stops too."""
        if self._closed:
            return
        self._closed = True
        self._deliver(_End(None))
        await self._owner._end_subscription(self)

    async def __aenter__(self) -> Subscription:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _deliver(self, event: Event | _End, run: str = "") -> None:
        """Queue an event, dropping the oldest if the consumer is behind (called by the client).

        A dropped sample is remembered by its seq, so that a consumer asking
        for status events is told (`Missed`) before the next event.
        """
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                dropped, dropped_run = self._queue.get_nowait()
                self.missed += 1
                if isinstance(dropped, Sample):
                    span = self._dropped.get((dropped.instrument, dropped_run))
                    if span is None:
                        self._dropped[(dropped.instrument, dropped_run)] = [
                            dropped.seq,
                            dropped.seq,
                            1,
                        ]
                    else:
                        span[1] = dropped.seq
                        span[2] += 1
        self._queue.put_nowait((event, run))

    def _end(self, error: BaseException | None) -> None:
        """End after the queued events, raising `error` if given (called by the client)."""
        self._deliver(_End(error))
