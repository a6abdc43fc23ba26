"""Jittered exponential reconnect delays."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delays(
    *,
    initial_s: float = 0.2,
    maximum_s: float = 30.0,
    factor: float = 2.0,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield delays that grow exponentially to `maximum_s`, with full jitter.

    Full jitter (a uniform draw below the ceiling) keeps a room full of agents
    from reconnecting in lock step after the hub restarts.
    """
    rng = rng or random.Random()
    ceiling = initial_s
    while True:
        yield rng.uniform(initial_s / 2, ceiling)
        ceiling = min(maximum_s, ceiling * factor)
