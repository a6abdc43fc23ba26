"""Committing one batch of the traffic log: retry what may heal, isolate what never will.

Runs on the writer thread. `Committer.commit` returns what it committed and
what it had to drop; it never raises for a batch, so that no batch can stop
the writer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .backend import BackendUnavailable, LogBackend
from .batch import Batch, Item, merge_acks

_log = logging.getLogger(__name__)

#: Retrying a write that failed in a way that may heal: the first delay,
#: doubled per attempt up to the longest.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 5.0
#: Once closing, how long a failing write is retried before its rows are
#: given up (the agents still hold whatever was not acknowledged).
CLOSE_GRACE_S = 2.0


@dataclass(slots=True)
class Outcome:
    """What became of a batch."""

    committed: list[Item]
    #: Each dropped item with the reason the backend gave.
    dropped: list[tuple[Item, str]]
    #: What to acknowledge: the highest committed seq per ack key and instrument.
    acks: dict[str, dict[str, int]]


class Committer:
    """Writes batches through one backend; `closing` cuts retries short."""

    def __init__(
        self,
        backend: LogBackend,
        closing: threading.Event,
        *,
        writer: str | None = None,
        on_failing: Callable[[tuple[float, str] | None], None] | None = None,
    ) -> None:
        self._backend = backend
        self._closing = closing
        #: A writer process's name: its batches commit their stream position.
        self._writer = writer
        #: Told (on this thread) whenever `failing` changes.
        self._on_failing = on_failing
        #: Since when (monotonic) and why writes fail in a way that may heal;
        #: None while they succeed. Read by the writer's health check.
        self.failing: tuple[float, str] | None = None

    def commit(self, items: list[Item]) -> Outcome:
        """Commit `items` in as few transactions as the backend allows; never raises."""
        outcome = Outcome([], [], {})
        self._commit(items, outcome)
        return outcome

    def _commit(self, items: list[Item], outcome: Outcome) -> None:
        attempt = 0
        give_up_at: float | None = None
        while True:
            try:
                batch = Batch.of(items, self._writer)
                self._backend.write(batch)
            except BackendUnavailable as exc:
                # A full disk, a locked file, a database that is down: it may
                # heal, so keep the batch and retry; the agents keep what is
                # unacknowledged and are paused once the backlog reaches high water.
                attempt += 1
                if self.failing is None:
                    self.failing = (time.monotonic(), str(exc))
                    if self._on_failing is not None:
                        self._on_failing(self.failing)
                if self._closing.is_set():
                    give_up_at = give_up_at or time.monotonic() + CLOSE_GRACE_S
                    if time.monotonic() >= give_up_at:
                        outcome.dropped.extend((item, f"closing: {exc}") for item in items)
                        return
                if attempt & (attempt - 1) == 0:  # attempts 1, 2, 4, 8...: not a flood
                    _log.error(
                        "traffic log write failed; retrying",
                        extra={"batch": len(items), "attempt": attempt, "error": str(exc)},
                    )
                self._closing.wait(min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempt - 1)))
                continue
            except Exception as exc:
                # Not the database but the content: some item it will never
                # take (a bug upstream). Halve the batch until it is found, so
                # that one bad row costs only itself, never the queue.
                if len(items) == 1:
                    outcome.dropped.append((items[0], repr(exc)))
                    return
                middle = len(items) // 2
                self._commit(items[:middle], outcome)
                self._commit(items[middle:], outcome)
                return
            if self.failing is not None:
                self.failing = None
                if self._on_failing is not None:
                    self._on_failing(None)
            if attempt:
                _log.warning("traffic log writes again", extra={"attempts": attempt})
            outcome.committed.extend(items)
            merge_acks(outcome.acks, batch.acks)
            return
