"""Lines from a serial port: split as they arrive, and a streaming instrument's sorted.

`LineReceiver` is the asyncio protocol under the serial transport; it hands
each line on. `StreamLines` keeps what a streaming instrument sent between
two reads: the newest frame (or known error line), and the noise, counted.
No port here: `serial_line.py` wires them to one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

from ...protocol import Value
from .line_profiles import Pattern

_MAX_LINE = 4096
#: Around a received line: the CR of CR LF, NULs some adapters send on
#: open, STX of STX...ETX framing, padding.
_STRIP = "\r\n\0\x02\x03 "

#: A stream's newest line not yet read: a frame's values, or a known error's text.
Newest = tuple[Literal["frame"], dict[str, Value]] | tuple[Literal["error"], str]


class LineReceiver(asyncio.Protocol):
    """Splits what the port receives into lines for `on_line`; remembers when the port is lost."""

    def __init__(
        self,
        ending: bytes,
        on_line: Callable[[str], None],
        on_bytes: Callable[[bytes], None] | None = None,
    ) -> None:
        self.lost: BaseException | None = None
        self.closed = asyncio.Event()
        self._ending = ending
        self._on_line = on_line
        #: Every chunk as it arrived, before it is split (a raw transcript).
        self._on_bytes = on_bytes
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        if self._on_bytes is not None:
            self._on_bytes(data)
        self._buffer += data
        while (end := self._buffer.find(self._ending)) >= 0:
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + len(self._ending)]
            self._on_line(raw.decode("ascii", errors="replace").strip(_STRIP))
        if len(self._buffer) > _MAX_LINE:
            self._buffer.clear()  # no line ending in sight: noise, or the wrong baud rate

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("port closed")
        self.closed.set()

    def discard_partial(self) -> None:
        """Forget a line begun before this exchange: line noise, or a late answer's start."""
        self._buffer.clear()


class StreamLines:
    """What a streaming instrument sent since the last read: one slot, not a queue.

    A queue would hand a slow reader ever older frames; the slot holds the
    newest, and counts the frames it replaced.
    """

    def __init__(self, frame: Pattern, is_known_error: Callable[[str], bool]) -> None:
        self._frame = frame
        self._is_known_error = is_known_error
        self._newest: Newest | None = None
        self._fresh: asyncio.Event | None = None
        #: Frames received.
        self.frames_received = 0
        #: Frames replaced by a newer one before a read took them (read slower than sent).
        self.frames_superseded = 0
        #: Lines that were neither a frame nor a known error (cut frames, noise).
        self.lines_skipped = 0
        #: Of those, since the last frame or error was taken.
        self.skipped_since_taken = 0
        #: The latest line that was no frame (noise, an error, an answer nobody took).
        self.last_other = ""

    def is_frame(self, line: str) -> bool:
        """Whether `line` is a whole frame of the stream."""
        try:
            return self._frame.values(line) is not None
        except ValueError:
            return False

    def reset(self) -> None:
        """Forget what came so far (at open): a frame cut by opening the port is no fault."""
        self._newest, self.skipped_since_taken = None, 0
        self._fresh = asyncio.Event()  # on the loop that opened the port

    def add(self, line: str) -> None:
        """Sort one line that no exchange took."""
        try:
            values = self._frame.values(line)
        except ValueError:
            values = None  # garbled into the pattern's shape: noise like any other
        if values is not None:
            self.frames_received += 1
            if self._newest is not None and self._newest[0] == "frame":
                self.frames_superseded += 1
            self._put(("frame", values))
        elif not line:
            return  # an empty line between frames says nothing
        elif self._is_known_error(line):
            self.last_other = line
            self._put(("error", line))
        else:
            self.last_other = line
            self.lines_skipped += 1
            self.skipped_since_taken += 1

    def take(self) -> Newest | None:
        """The newest frame or error line not yet taken, if any."""
        newest, self._newest = self._newest, None
        if newest is not None:
            self.skipped_since_taken = 0
        return newest

    async def wait(self, timeout_s: float, closed: asyncio.Event) -> None:
        """Until a frame or error line is there, `closed` is set, or `timeout_s` passes."""
        if self._newest is not None:
            return
        if self._fresh is None:
            self._fresh = asyncio.Event()
        self._fresh.clear()
        fresh = asyncio.ensure_future(self._fresh.wait())
        lost = asyncio.ensure_future(closed.wait())
        try:
            await asyncio.wait(
                (fresh, lost), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            fresh.cancel()
            lost.cancel()

    def _put(self, newest: Newest) -> None:
        self._newest = newest
        if self._fresh is not None:
            self._fresh.set()
