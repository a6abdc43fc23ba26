"""Reconnect delays: jittered, growing to a ceiling, short again once welcomed."""

from __future__ import annotations

import itertools
import random

import pytest

from kleinmaelzung.transport import Backoff, backoff_delays


def test_delays_grow_to_the_ceiling_with_full_jitter() -> None:
    backoff = Backoff(initial_s=0.2, maximum_s=3.0, rng=random.Random(1))
    ceilings = [0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0]
    for ceiling in ceilings:
        assert 0.1 <= backoff.next_delay() <= ceiling


def test_jitter_spreads_a_room_of_agents() -> None:
    # Ten agents losing the hub together must not come back together.
    firsts = [Backoff(rng=random.Random(seed)).next_delay() for seed in range(10)]
    assert all(0.1 <= delay <= 0.2 for delay in firsts)
    assert max(firsts) - min(firsts) >= 0.05, "spread over at least half the range"


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(initial_s=0.2, maximum_s=30.0, rng=random.Random(2))
    for _ in range(8):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 0.2


def test_the_slowest_pace_stays_near_the_maximum() -> None:
    backoff = Backoff(initial_s=0.2, maximum_s=30.0, rng=random.Random(3))
    assert all(15.0 <= backoff.slowest() <= 30.0 for _ in range(100))


def test_an_initial_delay_above_the_maximum_is_capped() -> None:
    backoff = Backoff(initial_s=5.0, maximum_s=1.0, rng=random.Random(4))
    assert all(backoff.next_delay() <= 1.0 for _ in range(5))
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=0)


def test_backoff_delays_is_the_same_sequence() -> None:
    delays = list(itertools.islice(backoff_delays(maximum_s=1.0, rng=random.Random(5)), 6))
    backoff = Backoff(maximum_s=1.0, rng=random.Random(5))
    assert delays == [backoff.next_delay() for _ in range(6)]
