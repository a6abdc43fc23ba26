"""How far an agent's clock is from the hub's, from the samples it sends anyway.

A live sample is stamped by the agent's clock when it was read, and arrives
at the hub a little later: `hub time - sample time = transit - offset`, where
`offset` is the agent's clock minus the hub's. Transit is never negative and,
on a lab network, the smallest transit seen in a minute is well under a
millisecond; so the smallest `hub time - sample time` in a window is `-offset`
to within that (NTP's clock filter keeps the sample with the least delay for
the same reason). No message of its own, and one subtraction per frame.

Backlog samples waited in a spool: they are not observed.
"""

from __future__ import annotations

#: Seconds per window; the estimate is the smaller of the last two windows'
#: minima, so it follows a stepped clock within two windows.
WINDOW_S = 60.0
#: A sample this far from the hub's clock is flagged on its own.
FAR_S = 24 * 3600.0


class ClockOffset:
    """The estimated offset of one agent's clock (agent minus hub), in seconds."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self._window_s = window_s
        self._window_end: float | None = None
        self._current: float | None = None
        self._previous: float | None = None
        #: Samples seen dated more than `FAR_S` away from the hub's clock.
        self.far = 0

    def observe(self, sample_ts: float, hub_ts: float) -> None:
        """Take one live sample's time and the hub's time at its arrival."""
        delay = hub_ts - sample_ts
        if abs(delay) > FAR_S:
            self.far += 1
        if self._window_end is None or hub_ts >= self._window_end:
            self._previous = self._current
            self._current = None
            self._window_end = hub_ts + self._window_s
        if self._current is None or delay < self._current:
            self._current = delay

    @property
    def offset_s(self) -> float | None:
        """The agent's clock minus the hub's; None before any live sample."""
        minima = [m for m in (self._current, self._previous) if m is not None]
        return -min(minima) if minima else None

    def within(self, bound_s: float) -> bool:
        """Whether the estimate (if any) is within `bound_s` of the hub's clock."""
        offset = self.offset_s
        return offset is None or abs(offset) <= bound_s
