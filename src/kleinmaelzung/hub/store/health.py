"""Whether the traffic log keeps up: the one rule every writer applies.

A log whose writes have failed, or whose backlog has stayed over high water,
for longer than `degraded_after_s` is ``degraded``, with the reason; it is
``ok`` again once a write succeeds and the backlog is back under low water.
"""

from __future__ import annotations

import logging
import time

from .base import LogHealth, OnHealth

_log = logging.getLogger(__name__)


class HealthWatch:
    """Turns what a writer observes into `LogHealth`, and says when it changes."""

    def __init__(
        self,
        location: str,
        *,
        high_water_rows: int,
        low_water_rows: int,
        degraded_after_s: float,
        on_health: OnHealth | None = None,
    ) -> None:
        self.location = location
        self.high_water = high_water_rows
        self.low_water = low_water_rows
        self.degraded_after_s = degraded_after_s
        self.on_health = on_health
        self.health = LogHealth()
        #: Since when (monotonic) the backlog is over high water, until it is under low water.
        self._behind_since: float | None = None

    @property
    def interval_s(self) -> float:
        """How often `check` should run: "for longer than" needs a clock anyway."""
        return min(1.0, self.degraded_after_s / 4)

    def check(
        self, pending: int, failing: tuple[float, str] | None, failure: str | None = None
    ) -> None:
        """Update `health` from the backlog, failing writes (since, why), a writer gone for good."""
        now = time.monotonic()
        if pending > self.high_water:
            if self._behind_since is None:
                self._behind_since = now
        elif pending <= self.low_water:
            self._behind_since = None
        reason = ""
        if failure is not None:
            reason = failure
        elif failing is not None and now - failing[0] >= self.degraded_after_s:
            reason = f"traffic log {self.location} cannot be written: {failing[1]}"
        elif self._behind_since is not None and now - self._behind_since >= self.degraded_after_s:
            reason = (
                f"traffic log {self.location} is behind: {pending} rows wait to be written"
                f" for {now - self._behind_since:.0f} s"
            )
        health = LogHealth("degraded", reason) if reason else LogHealth()
        changed = health.state != self.health.state
        self.health = health
        if not changed:
            return
        if reason:
            _log.warning("traffic log degraded", extra={"reason": reason})
        else:
            _log.info("traffic log keeps up again")
        if self.on_health is not None:
            self.on_health(health)
