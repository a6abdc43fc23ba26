"""The agent's estimate of the hub's clock: stale frames never make a late command look on time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kleinmaelzung.protocol import HubClock
from kleinmaelzung.protocol.deadlines import MAX_DRIFT


def test_unknown_before_the_welcome() -> None:
    clock = HubClock()
    assert not clock.synchronised
    with pytest.raises(RuntimeError, match="welcome"):
        clock.now(1.0)


def test_follows_the_hub_from_the_welcome() -> None:
    clock = HubClock()
    clock.observe(hub_clock=5000.0, local_now=10.0)
    assert clock.now(12.5) == pytest.approx(5002.5)
    assert clock.remaining(deadline=5003.0, local_now=12.5) == pytest.approx(0.5)


def test_a_frame_that_waited_in_a_buffer_is_ignored() -> None:
    # The agent was stopped for 40 s; on waking it reads an ack sent before.
    clock = HubClock()
    clock.observe(hub_clock=5000.0, local_now=10.0)
    clock.observe(hub_clock=5001.0, local_now=51.0)  # 40 s stale
    assert clock.now(51.0) == pytest.approx(5041.0, abs=0.01)


def test_a_fresher_frame_moves_the_estimate_forward() -> None:
    clock = HubClock()
    clock.observe(hub_clock=5000.0, local_now=10.0)  # the welcome took 0.2 s to arrive
    clock.observe(hub_clock=5100.4, local_now=110.0)
    assert clock.now(110.0) == pytest.approx(5100.4)


def test_drift_is_followed_within_its_bound() -> None:
    clock = HubClock()
    clock.observe(hub_clock=0.0, local_now=0.0)
    # The agent's crystal runs 50 ppm fast: a day later the hub is 4.32 s behind.
    day = 86_400.0
    clock.observe(hub_clock=day - 50e-6 * day, local_now=day)
    assert clock.now(day) == pytest.approx(day - 50e-6 * day)


@given(
    offset=st.floats(-1e6, 1e6),
    delays=st.lists(st.tuples(st.floats(0.001, 1000), st.floats(0, 100)), min_size=1, max_size=30),
)
def test_never_earlier_than_the_hub_without_drift(
    offset: float, delays: list[tuple[float, float]]
) -> None:
    """Whatever frames arrive late, the estimate never falls behind the true clock by more
    than the drift allowance: a command past its deadline is never taken for on time."""
    clock = HubClock()
    local = 0.0
    for step, transit in delays:
        local += step
        sent_local = local - transit  # when the hub sent it, on the agent's clock
        clock.observe(hub_clock=sent_local + offset, local_now=local)
        if clock.synchronised and step:
            true_now = local + offset
            # The first frame's own transit is unknowable; afterwards the
            # estimate only loses what the drift allowance lets it.
            assert clock.now(local) <= true_now + 1e-6
    assert clock.now(local) >= local + offset - delays[0][1] - MAX_DRIFT * local - 1e-6
