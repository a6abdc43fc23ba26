"""Raw serial transcripts at the agent: the bytes of one instrument's port, for a while.

The hub's ``transcript`` command (`protocol.transcript`) starts one for an
instrument whose driver can tap its port (a driver with a `transcript`
attribute: the serial line driver). While it runs, each chunk the driver
writes or reads goes to the hub as a `RawTraffic` message, as soon as it
passes the port, within a token bucket of `max_bytes_per_s` (a second's
worth of burst); what does not fit is left out and counted in the next
message's `dropped`. A transcript ends by itself at its deadline: nothing
stays on because someone forgot it. Raw messages are best effort: never
spooled, dropped while the hub is not connected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal, Protocol

from ..protocol import RawTraffic, escape_bytes
from ..protocol.transcript import MIN_CHARGE_BYTES

_log = logging.getLogger(__name__)

#: Bytes of one chunk sent at most: escaped, 4x that still fits a frame easily.
MAX_CHUNK_BYTES = 8192


class ByteTap(Protocol):
    """What a driver calls with the bytes it writes and reads (its `transcript` attribute)."""

    def tx(self, data: bytes) -> None:
        """Bytes just written to the instrument."""

    def rx(self, data: bytes) -> None:
        """Bytes just read from the instrument."""


class Transcript:
    """One instrument's transcript: off, or on until a deadline within a byte rate."""

    def __init__(
        self,
        instrument: str,
        send: Callable[[RawTraffic], None],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.instrument = instrument
        self._send = send
        self._monotonic = monotonic
        self._wall = wall
        self._until = 0.0
        self.rate = 0
        self._tokens = 0.0
        self._refilled = 0.0
        #: Bytes left out since the last message sent.
        self._dropped = 0
        #: Bytes sent and left out since the transcript started (for tests and logs).
        self.sent_bytes = 0
        self.dropped_bytes = 0

    @property
    def active(self) -> bool:
        """Whether the transcript runs now."""
        return self._monotonic() < self._until

    def start(self, duration_s: float, rate: int) -> float | None:
        """Run for `duration_s` at most `rate` bytes/s (0 s: stop); the end on the wall clock."""
        now = self._monotonic()
        if duration_s <= 0:
            self._until = 0.0
            _log.info("transcript stopped", extra={"instrument": self.instrument})
            return None
        self._until, self.rate = now + duration_s, rate
        self._tokens, self._refilled = float(rate), now
        self._dropped = self.sent_bytes = self.dropped_bytes = 0
        _log.info(
            "transcript started",
            extra={"instrument": self.instrument, "duration_s": duration_s, "bytes_per_s": rate},
        )
        return self._wall() + duration_s

    def tx(self, data: bytes) -> None:
        """Bytes just written to the instrument."""
        self._record("tx", data)

    def rx(self, data: bytes) -> None:
        """Bytes just read from the instrument."""
        self._record("rx", data)

    def _record(self, direction: Literal["tx", "rx"], data: bytes) -> None:
        now = self._monotonic()
        if not data or now >= self._until:
            return
        self._tokens = min(float(self.rate), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        part = data[: min(len(data), MAX_CHUNK_BYTES, int(self._tokens))]
        if len(part) < min(len(data), MIN_CHARGE_BYTES):
            self._left_out(len(data))
            return
        self._tokens -= max(len(part), MIN_CHARGE_BYTES)
        self._left_out(len(data) - len(part))
        message = RawTraffic(
            instrument=self.instrument,
            ts=self._wall(),
            direction=direction,
            data=escape_bytes(part),
            dropped=self._dropped,
        )
        self._dropped = 0
        self.sent_bytes += len(part)
        self._send(message)

    def _left_out(self, count: int) -> None:
        self._dropped += count
        self.dropped_bytes += count
