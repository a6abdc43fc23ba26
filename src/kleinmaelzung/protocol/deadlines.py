"""Command deadlines on the hub's clock, as an agent estimates it. Pure: time is passed in.

A command to a kiln is a physical act: it runs once, on time, or not at all.
The hub stamps each command it forwards with a `deadline` on its own
monotonic clock; the agent must not start a command once that deadline has
passed. A relative timeout cannot do this: a command that sat in a socket
buffer while the agent was stopped (SIGSTOP, a swapping Pi, a debugger)
looks brand new when it is finally read, and so does its timeout.

The agent cannot read the hub's clock, only frames that carry it (`welcome`,
`ack`). Each such frame is a lower bound: the hub's clock read `clock` when
the frame left, and it has only moved on since. `HubClock` keeps the offset
between the hub's clock and the agent's monotonic clock from these bounds:

- a bound above the estimate raises it at once (a fresh frame);
- a bound below it lowers it only by `max_drift` times the local time since
  the last frame: two crystals drift apart by parts per million, so a frame
  that is seconds low is stale (it waited in a buffer), not news.

So a stale frame can never make the agent believe the hub's clock is earlier
than it is, which is the direction that would let a late command run.
"""

from __future__ import annotations

#: How fast the estimate may fall behind: 100 ppm, twice what a Pi's crystal
#: without NTP drifts (about 50 ppm, 4 s a day).
MAX_DRIFT = 100e-6


class HubClock:
    """An agent's estimate of the hub's monotonic clock for one connection."""

    def __init__(self, max_drift: float = MAX_DRIFT) -> None:
        self._max_drift = max_drift
        self._offset: float | None = None
        self._observed_at = 0.0

    @property
    def synchronised(self) -> bool:
        """Whether a frame carrying the hub's clock has been seen."""
        return self._offset is not None

    def observe(self, hub_clock: float, local_now: float) -> None:
        """Take a frame stamped `hub_clock` that arrived at local monotonic `local_now`."""
        offset = hub_clock - local_now
        if self._offset is None or offset >= self._offset:
            self._offset = offset
        else:
            floor = self._offset - self._max_drift * max(0.0, local_now - self._observed_at)
            self._offset = max(offset, floor)
        self._observed_at = local_now

    def now(self, local_now: float) -> float:
        """The hub's clock now, at the latest; raises if never synchronised."""
        if self._offset is None:
            raise RuntimeError("the hub's clock is not known before its welcome")
        return local_now + self._offset

    def remaining(self, deadline: float, local_now: float) -> float:
        """Seconds left before `deadline` (hub clock); zero or less once it has passed."""
        return deadline - self.now(local_now)
