"""How the agent's own process fares: uptime, CPU use, resident memory.

Reported to the hub in each `agent_state` (`link`), so that a Pi running hot
or a leak shows in the hub's `/metrics`, not only on the Pi.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def rss_bytes() -> int | None:
    """This process's resident memory, or None where /proc does not say (not Linux)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class Vitals:
    """Readings of this process: each `read` gives the CPU use since the previous one."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self._clock = clock
        self._cpu = cpu
        self._started = clock()
        self._last = (self._started, cpu())

    def read(self) -> tuple[float, float, int | None]:
        """(uptime s, CPU % of one core since the last read, resident bytes or None)."""
        now, used = self._clock(), self._cpu()
        wall = now - self._last[0]
        cpu_pct = 100 * (used - self._last[1]) / wall if wall > 0 else 0.0
        self._last = (now, used)
        return round(now - self._started, 1), round(max(0.0, cpu_pct), 1), rss_bytes()
