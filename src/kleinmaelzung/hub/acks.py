"""Acknowledgements to agents, gathered: at most one Ack per agent per interval.

An Ack per commit is a frame (and a logged row, and so more commit work) for
nearly every data frame at low rates: gathering them took the hub's CPU in
the S2x benchmark from 82-88 % of a core to 67-79 %. Agents keep what is
unacknowledged in their outbox, and the hub recognises samples it logged
before a restart (`Store.last_seqs`), so a later acknowledgement costs only
memory on the agent.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import Callable

#: Seconds an acknowledgement may wait to be merged with later ones. Each
#: Ack is a frame and a logged row: at 0.25 s, 200 agents at 10 Hz (S2 in
#: benchmarks/run.py) made 800 a second, 29 % of the log's rows. Well under
#: the agent's `SpoolLimits.hold_s` (1 s), or its spool writes to disk the
#: samples it waits to have acknowledged.
ACK_INTERVAL_S = 0.5
#: Slots per interval: the Acks due in one slot leave together, one slot
#: every ACK_INTERVAL_S / ACK_SLOTS (5 ms), while any Ack is pending.
ACK_SLOTS = 50


class AckGatherer:
    """Merges committed seqs per agent run; each run's Ack leaves in a slot of its own.

    The Acks of 200 agents must not leave in one burst: a sample behind that
    burst waits. Nor may taking a commit be a burst: one commit names most
    agents. A timer per agent, started when a commit named it, had both:
    their Acks left together an interval after the commit, and arming 100
    timers on one commit's answer took the loop 0.3-0.7 ms (S2 in
    benchmarks/run.py, a commit every 50 ms: p99 1.8-2.7 ms). So each key
    (`traffic.ack_key`: agent and run) has a fixed slot within the interval,
    by a hash of the key, and one timer serves the slots as they come: Acks
    spread evenly however commits fall, each at most an interval after its
    commit, and taking a commit is merging dicts. An ack never names a lower
    seq than an earlier one for the same run and instrument.
    """

    def __init__(
        self,
        send: Callable[[str, dict[str, int]], None],
        *,
        interval_s: float = ACK_INTERVAL_S,
        slots: int = ACK_SLOTS,
    ) -> None:
        self._send = send
        self._slots = slots
        self._tick_s = interval_s / slots
        self._pending: dict[str, dict[str, int]] = {}
        self._sent: dict[str, dict[str, int]] = {}
        #: Keys with something pending, by their slot.
        self._due: list[set[str]] = [set() for _ in range(slots)]
        self._timer: asyncio.TimerHandle | None = None
        #: The last tick (loop time // tick) whose slot was served.
        self._served = 0

    def committed(self, acks: dict[str, dict[str, int]]) -> None:
        """Take the highest committed seq per agent run and instrument (called on the loop)."""
        pending = self._pending
        for key, seqs in acks.items():
            sent = self._sent.get(key, {})
            merged = pending.get(key)
            fresh = merged is None
            if merged is None:
                merged = {}
            for instrument, seq in seqs.items():
                # Equal is sent again: the agent may not have had the first.
                if seq > merged.get(instrument, -1) and seq >= sent.get(instrument, -1):
                    merged[instrument] = seq
            if fresh and merged:
                pending[key] = merged
                self._due[self._slot(key)].add(key)
        if pending and self._timer is None:
            loop = asyncio.get_running_loop()
            tick = math.floor(loop.time() / self._tick_s)
            # Nothing was pending: no slot before the next tick owes anything.
            self._served = tick
            self._timer = loop.call_at((tick + 1) * self._tick_s, self._serve)

    def forget(self, agent_id: str) -> None:
        """Drop the memory of what was sent to an agent whose connection ended (every run)."""
        prefix = f"{agent_id}/"
        for key in [k for k in self._sent if k.startswith(prefix)]:
            del self._sent[key]

    def flush(self) -> None:
        """Send everything gathered now."""
        for due in self._due:
            due.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for key in list(self._pending):
            self._send_one(key)

    def _slot(self, key: str) -> int:
        return zlib.crc32(key.encode()) % self._slots

    def _serve(self) -> None:
        """Send the Acks of every slot that came up since the last call."""
        self._timer = None
        loop = asyncio.get_running_loop()
        tick = math.floor(loop.time() / self._tick_s)
        first = max(self._served + 1, tick - self._slots + 1)
        for served in range(first, tick + 1):
            due = self._due[served % self._slots]
            if due:
                keys = list(due)
                due.clear()
                for key in keys:
                    self._send_one(key)
        self._served = tick
        if self._pending:
            self._timer = loop.call_at((tick + 1) * self._tick_s, self._serve)

    def _send_one(self, key: str) -> None:
        seqs = self._pending.pop(key, None)
        if seqs:
            self._sent.setdefault(key, {}).update(seqs)
            self._send(key, seqs)
