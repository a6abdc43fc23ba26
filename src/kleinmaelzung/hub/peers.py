"""One connected agent or client: its socket, its bounded send queue, its writer task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import WSMsgType, web

from ..protocol import HubConnection, PeerKind

_log = logging.getLogger(__name__)


class Peer:
    """A connection as the hub's services see it: a name and a non-blocking `send`."""

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
        #: Data frames dropped because this peer did not keep up.
        self.missed = 0
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_frames)
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the task that drains the send queue into the socket."""
        self._writer = asyncio.create_task(self._write(), name=f"kmz-writer-{self.name}")

    def send(self, frame: bytes, *, droppable: bool = False) -> bool:
        """Queue one encoded frame; return False if it was dropped (queue full)."""
        try:
            self._queue.put_nowait(frame)
            return True
        except asyncio.QueueFull:
            if droppable:
                self.missed += 1
                if self.missed == 1 or self.missed % 1000 == 0:
                    _log.warning(
                        "slow peer, dropping data", extra={"peer": self.name, "missed": self.missed}
                    )
                return False
            # Replies and status must not be lost silently: make room by
            # dropping the oldest queued frame instead.
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.missed += 1
            self._queue.put_nowait(frame)
            return True

    async def close(self) -> None:
        """Send what is queued (briefly), then stop the writer."""
        if self._writer is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout=1.0)
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer

    async def _write(self) -> None:
        while True:
            frame = await self._queue.get()
            try:
                if not self.ws.closed:
                    await self.ws.send_frame(frame, WSMsgType.TEXT)
            except (ConnectionError, RuntimeError) as exc:
                _log.info("send failed", extra={"peer": self.name, "error": str(exc)})
            finally:
                self._queue.task_done()

    def __repr__(self) -> str:
        return f"<Peer {self.kind} {self.name}>"
