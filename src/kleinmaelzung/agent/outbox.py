"""Store-and-forward: every sample waits here until the hub says it is durably logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from ..protocol import Sample

_log = logging.getLogger(__name__)


class Outbox:
    """A bounded, ordered queue of samples: sent ones stay until acknowledged.

    When the hub is away long enough for the outbox to fill, the oldest samples
    are dropped and counted: a full outbox means memory, not the hub, would fail.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        #: Samples lost because the outbox was full.
        self.dropped = 0
        self._items: list[Sample] = []
        self._sent = 0  # items[:_sent] went out on the current connection
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def unsent(self) -> int:
        """Samples not yet sent on the current connection."""
        return len(self._items) - self._sent

    def put(self, sample: Sample) -> None:
        """Add a new sample."""
        if len(self._items) >= self.capacity:
            overflow = len(self._items) - self.capacity + 1
            del self._items[:overflow]
            self._sent = max(0, self._sent - overflow)
            self.dropped += overflow
            if self.dropped == overflow or self.dropped % 1000 < overflow:
                _log.warning(
                    "outbox full, dropping oldest samples", extra={"dropped": self.dropped}
                )
        self._items.append(sample)
        self._ready.set()

    async def wait_unsent(self) -> None:
        """Return when there is something to send."""
        while self._sent >= len(self._items):
            self._ready.clear()
            await self._ready.wait()

    def take_unsent(self, limit: int) -> list[Sample]:
        """The next unsent samples, oldest first, marked as sent."""
        batch = self._items[self._sent : self._sent + limit]
        self._sent += len(batch)
        return batch

    def acknowledge(self, seqs: Mapping[str, int]) -> None:
        """Forget samples the hub has logged (seq <= acked, per instrument)."""
        keep: list[Sample] = []
        sent = self._sent
        for index, sample in enumerate(self._items):
            acked = seqs.get(sample.instrument)
            if acked is not None and sample.seq <= acked:
                if index < self._sent:
                    sent -= 1
                continue
            keep.append(sample)
        self._items = keep
        self._sent = sent

    def rewind(self) -> None:
        """After a reconnect: everything unacknowledged goes out again."""
        self._sent = 0
        if self._items:
            self._ready.set()
