"""Jittered exponential reconnect delays, reset once a connection is welcomed."""

from __future__ import annotations

import random
from collections.abc import Iterator


class Backoff:
    """Delays between reconnect attempts: growing while they fail, short again once welcomed.

    Full jitter (a uniform draw below the ceiling) keeps a room full of agents
    from reconnecting in lock step after the hub restarts. The ceiling goes
    back to `initial_s` only when a hello is welcomed (`reset()`), not when a
    TCP connection opens: a hub that accepts and then refuses, or restarts
    again at once, would otherwise be hammered.
    """

    def __init__(
        self,
        *,
        initial_s: float = 0.2,
        maximum_s: float = 30.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial_s <= 0:
            raise ValueError("backoff needs initial_s > 0")
        self.initial_s = min(initial_s, maximum_s)
        self.maximum_s = maximum_s
        self._factor = factor
        self._rng = rng or random.Random()
        self._ceiling = self.initial_s

    def next_delay(self) -> float:
        """The wait before the next attempt; each call raises the ceiling for the one after."""
        delay = self._rng.uniform(self.initial_s / 2, self._ceiling)
        self._ceiling = min(self.maximum_s, self._ceiling * self._factor)
        return delay

    def slowest(self) -> float:
        """The wait after a failure only an operator can mend: about `maximum_s`, jittered."""
        return self._rng.uniform(self.maximum_s / 2, self.maximum_s)

    def reset(self) -> None:
        """Start again from `initial_s`: a hello was welcomed."""
        self._ceiling = self.initial_s


def backoff_delays(
    *,
    initial_s: float = 0.2,
    maximum_s: float = 30.0,
    factor: float = 2.0,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield delays that grow exponentially to `maximum_s`, with full jitter (see `Backoff`)."""
    backoff = Backoff(initial_s=initial_s, maximum_s=maximum_s, factor=factor, rng=rng)
    while True:
        yield backoff.next_delay()
