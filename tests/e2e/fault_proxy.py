"""A TCP proxy on 127.0.0.1 that passes, delays, black-holes or resets connections on command.

Put between an agent and the hub (the agent's `hub` URL names the proxy's
port), it makes the network faults a lab sees, with real sockets:

- `pass_through()`: bytes flow both ways as they come;
- `delay(s)`: every chunk arrives `s` seconds after it was read, in order;
- `blackhole()`: the sockets stay open and no byte passes either way. The proxy
  stops reading, so bytes wait in the kernel's buffers and the sender's writes
  block once they fill, as with a cable pulled out mid-route. New connections
  are accepted and held without a byte, and reset when the route is back (a
  real one would never have opened). `pass_through()` heals it: what waited
  on open connections flows on, as TCP would deliver it once the route is
  back (by then a peer that gave up has closed, and its close follows);
- `reset()`: every open connection is closed with a TCP RST, both ways;
- `refuse(True)`: new connections are reset as soon as they are accepted (a
  hub that is not there), until `refuse(False)`.

All methods run on the event loop the proxy was started on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field

_CHUNK = 64 * 1024


@dataclass(eq=False)
class _Pair:
    """One proxied connection: the downstream peer's socket and the upstream one."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """Forwards 127.0.0.1:`port` to `upstream_port`, with faults on command."""

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        #: Connections accepted so far.
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._delay_s = 0.0
        self._refusing = False
        self._pairs: set[_Pair] = set()

    @property
    def url(self) -> str:
        """The proxy's HTTP URL, to give an agent as its hub."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        """Connections the proxy holds now."""
        return len(self._pairs)

    async def start(self) -> FaultProxy:
        """Listen on a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._flowing.set()
        await self.reset()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- faults -------------------------------------------------------------------

    def pass_through(self) -> None:
        """Let bytes flow again, without delay (heals a black hole)."""
        self._delay_s = 0.0
        self._flowing.set()

    def delay(self, seconds: float) -> None:
        """Deliver every chunk read from now on `seconds` late, in order."""
        self._delay_s = seconds
        self._flowing.set()

    def blackhole(self) -> None:
        """Keep every socket open and pass no byte, until `pass_through()`."""
        self._flowing.clear()

    def refuse(self, refusing: bool = True) -> None:
        """Reset new connections at once (or accept them again)."""
        self._refusing = refusing

    async def reset(self) -> None:
        """Close every open connection with a TCP RST on both sides."""
        pairs = list(self._pairs)
        for pair in pairs:
            _abort(pair.client)
            if pair.upstream is not None:
                _abort(pair.upstream)
        for pair in pairs:
            for task in pair.tasks:
                task.cancel()
            for task in pair.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._pairs.difference_update(pairs)

    # --- forwarding ----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._refusing:
            _abort(writer)
            return
        pair = _Pair(writer)
        self._pairs.add(pair)
        try:
            if not self._flowing.is_set():
                # In a real black hole the connection would never have opened:
                # hold it without a byte, and drop it once the route is back.
                await self._flowing.wait()
                _abort(writer)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                _abort(writer)  # nothing listens upstream: as if refused
                return
            pair.upstream = up_writer
            pair.tasks = [
                asyncio.create_task(self._pipe(reader, up_writer, writer)),
                asyncio.create_task(self._pipe(up_reader, writer, up_writer)),
            ]
            await asyncio.gather(*pair.tasks, return_exceptions=True)
        finally:
            self._pairs.discard(pair)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, other: asyncio.StreamWriter
    ) -> None:
        """Copy one direction (a reader and a writer, so a delay is per chunk); then end both."""
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        writer = asyncio.create_task(self._write(chunks, sink))

        def failed(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                _abort(other)  # the reader sees it and ends
                _abort(sink)

        writer.add_done_callback(failed)
        try:
            while True:
                await self._flowing.wait()
                chunk = await source.read(_CHUNK)
                chunks.put_nowait((time.monotonic() + self._delay_s, chunk))
                if not chunk:
                    break
            await writer
        except (ConnectionError, OSError):
            _abort(other)
            _abort(sink)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await writer

    async def _write(
        self, chunks: asyncio.Queue[tuple[float, bytes]], sink: asyncio.StreamWriter
    ) -> None:
        """Write each chunk at its time, in order; an empty chunk is the end of the stream."""
        while True:
            due, chunk = await chunks.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # the delay being simulated
            await self._flowing.wait()  # read just before a black hole: it waits too
            if not chunk:
                with contextlib.suppress(OSError):
                    sink.write_eof()
                await sink.drain()
                sink.close()
                return
            sink.write(chunk)
            await sink.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST: SO_LINGER 0, then close without flushing."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
