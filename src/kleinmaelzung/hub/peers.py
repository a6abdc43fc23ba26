"""One connected agent or client: its socket, its bounded send buffer, its writer task.

A frame for a peer whose socket keeps up, with nothing queued before it, goes
to the socket as a WebSocket frame built here, at the end of the event loop's
current round, together with the peer's other frames of that round: no task
switch per frame (S2, 200 publishers to 5 subscribers: the writer tasks'
wake-ups, futures and aiohttp's `send_frame` were about a fifth of the hub's
CPU), and one system call per peer per round (the `send` calls were a fifth
of the hub's time). Once the socket's buffer holds more than `DIRECT_BUFFER`, frames queue
and the peer's writer task drains them with aiohttp's flow control; samples
waiting for the same client are then coalesced into one `data` frame: under
load a client gets fewer, larger frames (one system call instead of
hundreds), and at low rates each sample still leaves at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from ..protocol import CloseCode, HubConnection, Missed, PeerKind, data_frame, encode

_log = logging.getLogger(__name__)

#: Bytes of samples queued for one slow client before the oldest are dropped,
#: beside the frame count: a frame may hold 1000 samples.
QUEUE_BYTES = 16 << 20

#: What a queued samples array holds, per instrument: (instrument, first seq,
#: last seq, count). Kept so that a client that missed it can be told exactly.
Span = tuple[str, int, int, int]

#: Bytes in a socket's send buffer beyond which frames queue for the writer
#: task instead of being written at once (asyncio's default high water).
DIRECT_BUFFER = 64 << 10

_LEN2 = struct.Struct("!BBH").pack
_LEN8 = struct.Struct("!BBQ").pack


def wire_frame(payload: bytes) -> bytes:
    """`payload` as one unmasked, uncompressed WebSocket text frame (RFC 6455 §5.2).

    What a server sends: the same bytes suit every peer, so a frame for many
    subscribers is built once.
    """
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return _LEN2(0x81, 126, n) + payload
    return _LEN8(0x81, 127, n) + payload


class Peer:
    """A connection as the hub's services see it: a name and non-blocking sends."""

    def __init__(
        self,
        kind: PeerKind,
        name: str,
        ws: web.WebSocketResponse,
        connection: HubConnection[Any],
        *,
        queue_frames: int,
    ) -> None:
        self.kind = kind
        self.name = name
        self.ws = ws
        self.connection = connection
        #: Sample batches dropped because this peer did not keep up.
        self.missed = 0
        #: Close the connection (4005) rather than drop samples when it lags.
        self.disconnect_on_overflow = False
        #: Also send samples agents send from their spools (`subscribe.backlog`).
        self.wants_backlog = False
        # While a recovery reads the log: live samples wait here (`hold`).
        self._held: list[tuple[bytes, bytes, tuple[Span, ...]]] | None = None
        #: (instrument, channel) pairs this agent was told it did not declare.
        self.noted: set[tuple[str, str]] = set()
        self._limit = queue_frames
        # Items in send order: (run, JSON array of samples, spans) for data,
        # the run as `encode_run` gives it; (None, a frame, ()) for the rest.
        self._items: deque[tuple[bytes | None, bytes, tuple[Span, ...]]] = deque()
        self._data_items = 0
        self._data_bytes = 0
        # Dropped and not yet told: (instrument, run) -> [first, last, count].
        self._dropped: dict[tuple[str, bytes], list[int]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None
        # Kept: asyncio.get_running_loop() costs a getpid() system call per
        # call on Python 3.11, and a round starts for nearly every frame.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Future[None] | None = None
        # Written to directly while it keeps up: only a connection without
        # permessage-deflate (the hub negotiates none) takes frames built here.
        self._round: list[bytes] = []
        self._round_bytes = 0
        ws_writer = getattr(ws, "_writer", None)
        self._transport: asyncio.WriteTransport | None = (
            getattr(ws_writer, "transport", None)
            if ws_writer is not None and not getattr(ws_writer, "compress", 1)
            else None
        )

    def start(self) -> None:
        """Start the task that drains the send buffer into the socket."""
        self._loop = asyncio.get_running_loop()
        self._writer = self._loop.create_task(self._write(), name=f"kmz-writer-{self.name}")

    def send(self, frame: bytes) -> None:
        """Send one encoded message; queued if the socket lags, never dropped for being slow."""
        if self._direct():
            self._write_in_round(wire_frame(frame))
            return
        self._items.append((None, frame, ()))
        self._kick()

    def send_samples(
        self,
        samples_array: bytes,
        run: bytes = b"",
        spans: tuple[Span, ...] = (),
        wire: bytes | None = None,
    ) -> None:
        """Send one run's samples (an encoded JSON array); queued on lag, the oldest dropped first.

        `spans` says what the array holds, so that the client is told exactly
        what it missed (`missed`) if it is dropped. `wire`, if given, is these
        samples as a whole WebSocket frame (`wire_frame` of `data_frame`), built
        once for every subscriber.
        """
        if self._held is not None:
            self._held.append((run, samples_array, spans))
            return
        if self._direct():
            self._write_in_round(
                wire if wire is not None else wire_frame(data_frame((samples_array,), run))
            )
            return
        while self._data_items and (
            self._data_items >= self._limit or self._data_bytes >= QUEUE_BYTES
        ):
            if self.disconnect_on_overflow:
                self._overflowed()
                return
            self._drop_oldest_data()
        self._items.append((run, samples_array, spans))
        self._data_items += 1
        self._data_bytes += len(samples_array)
        self._kick()

    def hold(self) -> None:
        """Keep live samples back until `release`: a recovery from the log goes first."""
        if self._held is None:
            self._held = []

    def release(self, recovered: list[bytes], covered: dict[tuple[str, bytes], int]) -> None:
        """Send the recovered frames, then the live samples held meanwhile.

        A held array whose samples were all recovered already is not sent
        again: `covered` is the newest recovered seq per (instrument, run).
        """
        held, self._held = self._held or [], None
        for frame in recovered:
            self._items.append((None, frame, ()))
        for run, array, spans in held:
            if spans and all(last <= covered.get((i, run), -1) for i, _, last, _ in spans):
                continue
            self.send_samples(array, run, spans)
        self._kick()

    async def close(self) -> None:
        """Send what is queued (briefly), then stop the writer."""
        if self._writer is None:
            return
        self._end_round()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=1.0)
        writer, self._writer = self._writer, None
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer

    async def disconnect(self, code: CloseCode, reason: str) -> None:
        """Send what is queued (briefly), then close the connection with `code`."""
        await self.close()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=reason.encode()[:120])

    def _direct(self) -> bool:
        """May a frame go to the socket now: nothing queued before it, and the socket keeps up?"""
        transport = self._transport
        return (
            transport is not None
            and not self._items
            and self._idle.is_set()
            and self._writer is not None
            and self._closing is None
            and not transport.is_closing()
            and transport.get_write_buffer_size() + self._round_bytes <= DIRECT_BUFFER
        )

    def _write_in_round(self, wire: bytes) -> None:
        if not self._round:
            assert self._loop is not None, "start() first"  # _direct() holds only once started
            self._loop.call_soon(self._end_round)
        self._round.append(wire)
        self._round_bytes += len(wire)

    def _end_round(self) -> None:
        """Write this round's frames in one system call (called soon, before any writer wake-up)."""
        frames, self._round = self._round, []
        self._round_bytes = 0
        transport = self._transport
        if frames and transport is not None and not transport.is_closing():
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    def _drop_oldest_data(self) -> None:
        for index, (run, payload, spans) in enumerate(self._items):
            if run is not None:
                del self._items[index]
                self._data_items -= 1
                self._data_bytes -= len(payload)
                self.missed += 1
                for instrument, first, last, count in spans:
                    dropped = self._dropped.get((instrument, run))
                    if dropped is None:
                        self._dropped[(instrument, run)] = [first, last, count]
                    else:
                        dropped[0] = min(dropped[0], first)
                        dropped[1] = max(dropped[1], last)
                        dropped[2] += count
                if self.missed == 1 or self.missed % 1000 == 0:
                    _log.warning(
                        "slow peer, dropping data", extra={"peer": self.name, "missed": self.missed}
                    )
                return

    def _overflowed(self) -> None:
        """A client that asked not to skip fell behind: close it, saying why (once)."""
        if self._closing is None:
            reason = f"fell behind: {self._data_items} frames queued"
            _log.warning("slow peer, closing", extra={"peer": self.name, "reason": reason})
            self._closing = asyncio.ensure_future(self.disconnect(CloseCode.SLOW_CONSUMER, reason))

    def _missed_frames(self) -> list[bytes]:
        """`missed` messages for what was dropped since the last ones."""
        frames = [
            encode(
                Missed(
                    instrument=instrument,
                    run=msgspec.json.decode(run) if run else None,
                    first_seq=first,
                    last_seq=last,
                    count=count,
                )
            )
            for (instrument, run), (first, last, count) in self._dropped.items()
        ]
        self._dropped.clear()
        return frames

    def _frames(self) -> list[bytes]:
        """Take everything queued; consecutive sample arrays of one run become one data frame."""
        # Told before the samples that come after the gap.
        frames: list[bytes] = self._missed_frames() if self._dropped else []
        arrays: list[bytes] = []
        current = b""
        for run, payload, _ in self._items:
            if run is not None and (run == current or not arrays):
                current = run
                arrays.append(payload)
                continue
            if arrays:
                frames.append(data_frame(arrays, current))
                arrays = []
            if run is None:
                frames.append(payload)
            else:
                current = run
                arrays.append(payload)
        if arrays:
            frames.append(data_frame(arrays, current))
        self._items.clear()
        self._data_items = 0
        self._data_bytes = 0
        return frames

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._end_round()  # frames of this round go before those queued after them
            while self._items:
                for frame in self._frames():
                    try:
                        if not self.ws.closed:
                            await self.ws.send_frame(frame, WSMsgType.TEXT)
                    except (ConnectionError, RuntimeError) as exc:
                        _log.info("send failed", extra={"peer": self.name, "error": str(exc)})
            self._idle.set()

    def __repr__(self) -> str:
        return f"<Peer {self.kind} {self.name}>"
