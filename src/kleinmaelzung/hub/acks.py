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
from collections.abc import Callable

#: Seconds an acknowledgement may wait to be merged with later ones.
ACK_INTERVAL_S = 0.25


class AckGatherer:
    """Merges committed seqs per agent run; each run's Ack goes out on its own timer.

    One timer per agent, not one for all: the Acks of 200 agents would
    otherwise leave in one burst, and a sample behind that burst waits.
    Keys are `traffic.ack_key`s (agent and run). An ack never names a lower
    seq than an earlier one for the same run and instrument.
    """

    def __init__(
        self,
        send: Callable[[str, dict[str, int]], None],
        *,
        interval_s: float = ACK_INTERVAL_S,
    ) -> None:
        self._send = send
        self._interval_s = interval_s
        self._pending: dict[str, dict[str, int]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._sent: dict[str, dict[str, int]] = {}

    def committed(self, acks: dict[str, dict[str, int]]) -> None:
        """Take the highest committed seq per agent run and instrument (called on the loop)."""
        for key, seqs in acks.items():
            sent = self._sent.get(key, {})
            merged = self._pending.setdefault(key, {})
            for instrument, seq in seqs.items():
                # Equal is sent again: the agent may not have had the first.
                if seq > merged.get(instrument, -1) and seq >= sent.get(instrument, -1):
                    merged[instrument] = seq
            if not merged:
                del self._pending[key]
            elif key not in self._timers:
                self._timers[key] = asyncio.get_running_loop().call_later(
                    self._interval_s, self._send_one, key
                )

    def forget(self, agent_id: str) -> None:
        """Drop the memory of what was sent to an agent whose connection ended (every run)."""
        prefix = f"{agent_id}/"
        for key in [k for k in self._sent if k.startswith(prefix)]:
            del self._sent[key]

    def flush(self) -> None:
        """Send everything gathered now."""
        for agent_id in list(self._pending):
            self._send_one(agent_id)

    def _send_one(self, agent_id: str) -> None:
        timer = self._timers.pop(agent_id, None)
        if timer is not None:
            timer.cancel()
        seqs = self._pending.pop(agent_id, None)
        if seqs:
            self._sent.setdefault(agent_id, {}).update(seqs)
            self._send(agent_id, seqs)
