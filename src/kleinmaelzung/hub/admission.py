"""Which TCP connections the hub takes: at most so many in total and per peer address.

A connection over a cap is answered `503 too_many_connections` and closed
before aiohttp sees it, so that a flood of idle sockets (1,100 of them once
made the hub unreachable and wrote 42,613 "Too many open files" tracebacks)
costs one accept each and leaves file descriptors for everyone else. The total
stays below the process's open-file limit, which the hub raises to its hard
limit at start where allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..protocol import ErrorCode, Limits

_log = logging.getLogger(__name__)

#: File descriptors kept for everything but connections: the log (SQLite
#: files, PostgreSQL sockets), listening sockets, serial ports of a demo.
RESERVED_FDS = 64
#: asyncio accepts up to `backlog` sockets per wake-up before any of them
#: reaches admission, and a refused one is closed an iteration later, so a
#: burst can hold a few batches at once: `ACCEPT_BATCHES` of them are kept
#: free too, and the backlog shrinks with a low limit. Without this a hard
#: limit of 256 ran out under a burst of 300 connections (asyncio logged a
#: traceback per failed accept).
MAX_ACCEPT_BATCH = 128
ACCEPT_BATCHES = 3

#: Addresses whose refusals are remembered (to log each once), at most.
MAX_NOTED_ADDRESSES = 1024

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 5\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)


def raise_open_file_limit() -> int | None:
    """Raise the soft open-file limit to the hard one where allowed; return the soft limit."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            _log.warning("open-file limit not raised", extra={"soft": soft, "error": str(exc)})
    return None if soft == resource.RLIM_INFINITY else soft


class Admission:
    """Counts connections in total and per address; says which to refuse."""

    def __init__(self, limits: Limits, open_file_limit: int | None = None) -> None:
        total = limits.max_connections
        #: Sockets accepted per wake-up (the listening socket's backlog).
        self.accept_batch = MAX_ACCEPT_BATCH
        if open_file_limit is not None:
            spare = max(1, open_file_limit - RESERVED_FDS)
            self.accept_batch = max(1, min(MAX_ACCEPT_BATCH, spare // (4 * ACCEPT_BATCHES)))
            total = max(1, min(total, spare - ACCEPT_BATCHES * self.accept_batch))
        self.max_total = total
        self.max_per_address = limits.max_connections_per_address
        self.total = 0
        self._by_address: dict[str, int] = {}
        #: Connections refused since the hub started.
        self.refused = 0
        self._noted: dict[str, int] = {}

    def admit(self, address: str) -> str | None:
        """Count a new connection from `address`, or return why it is refused."""
        held = self._by_address.get(address, 0)
        if self.total >= self.max_total:
            why = f"the hub holds {self.total} connections, its limit"
        elif held >= self.max_per_address and not _is_loopback(address):
            why = f"{held} connections from {address}, the limit per address"
        else:
            self.total += 1
            self._by_address[address] = held + 1
            return None
        self.refused += 1
        self._note(address, why)
        return why

    def release(self, address: str) -> None:
        """Forget one connection from `address` that closed."""
        self.total -= 1
        held = self._by_address.get(address, 0) - 1
        if held > 0:
            self._by_address[address] = held
        else:
            self._by_address.pop(address, None)
            # Below the cap again: a later flood from it is logged again.
            self._noted.pop(address, None)

    def _note(self, address: str, why: str) -> None:
        count = self._noted.get(address)
        if count is None:
            if len(self._noted) >= MAX_NOTED_ADDRESSES:
                self._noted.pop(next(iter(self._noted)))
            _log.warning("connection refused", extra={"address": address, "why": why})
            count = 0
        self._noted[address] = count + 1


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class _Admitted(asyncio.Protocol):
    """aiohttp's protocol for one connection, made only once the connection is admitted.

    With TLS, the handshake starts after admission (so an over-cap flood
    costs no handshakes) and is bounded by `Tls.handshake_s`.
    """

    def __init__(
        self,
        admission: Admission,
        make: Callable[[], Any],
        tls: Tls | None = None,
        handshakes: set[asyncio.Task[None]] | None = None,
    ) -> None:
        self._admission = admission
        self._make = make
        self._tls = tls
        self._handshakes = handshakes if handshakes is not None else set()
        self._inner: Any = None
        self._address = ""
        self._admitted = False
        # What TLS decrypted with the handshake's last flight, before the
        # inner protocol exists (one read at most).
        self._early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        why = self._admission.admit(self._address)
        assert isinstance(transport, asyncio.Transport)
        if why is not None:
            if self._tls is None:
                body = b'{"code": "%s", "message": "%s; try again later"}' % (
                    ErrorCode.TOO_MANY_CONNECTIONS.encode(),
                    why.encode(),
                )
                transport.write(_REFUSAL % (len(body), body))
                transport.close()
            else:
                transport.abort()  # a TLS client could not read a plain answer
            return
        self._admitted = True
        if self._tls is None:
            self._start(transport)
            return
        # Not a byte of the ClientHello may reach us before start_tls takes over.
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._start_tls(transport, self._tls))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _start_tls(self, transport: asyncio.Transport, tls: Tls) -> None:
        try:
            secure = await asyncio.get_running_loop().start_tls(
                transport,
                self,
                tls.context,
                server_side=True,
                ssl_handshake_timeout=tls.handshake_s,
                ssl_shutdown_timeout=tls.shutdown_s,
            )
        except OSError as exc:  # ssl.SSLError, a reset, the handshake's deadline
            _log.debug("TLS handshake failed", extra={"address": self._address, "error": str(exc)})
            transport.abort()
            self._release()
            return
        except asyncio.CancelledError:
            transport.abort()
            self._release()
            raise
        if secure is None or secure.is_closing():  # lost as the handshake ended
            self._release()
            return
        self._start(secure)

    def _start(self, transport: asyncio.Transport) -> None:
        self._inner = self._make()
        self._inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            self._inner.data_received(data)

    def _release(self) -> None:
        if self._admitted:
            self._admitted = False
            self._admission.release(self._address)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
        elif self._admitted:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            result: bool | None = self._inner.eof_received()
            return result
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


@dataclass(frozen=True)
class Tls:
    """How an `AdmittingSite` serves TLS: its context and the handshake's deadlines."""

    context: ssl.SSLContext
    #: A connection that has not finished its handshake by then is cut.
    handshake_s: float = 10.0
    #: How long a closing connection waits for the peer's close_notify (asyncio's default: 30 s).
    shutdown_s: float = 2.0


class AdmittingSite(web.TCPSite):
    """A `TCPSite` whose connections pass `admission` before aiohttp sees them (and before
    a TLS handshake, with `tls`)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        admission: Admission,
        tls: Tls | None = None,
    ) -> None:
        super().__init__(runner, host, port)
        self.admission = admission
        self.tls = tls
        self._handshakes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen, as `TCPSite.start` does, through the admission."""
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        admission, tls, handshakes = self.admission, self.tls, self._handshakes
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Admitted(admission, server, tls, handshakes),
            self._host,
            self._port,
            backlog=min(self._backlog, admission.accept_batch),
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        for listening in sockets:
            # asyncio accepts `accept_batch` per wake-up and listens with the
            # same number; the kernel's queue of connections not yet accepted
            # must stay long, or a burst's connections beyond it hang
            # unanswered (the kernel retries their handshake for seconds).
            with socket.fromfd(listening.fileno(), listening.family, listening.type) as dup:
                dup.listen(max(self._backlog, MAX_ACCEPT_BATCH))
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        """Stop listening; handshakes under way are cut."""
        for task in list(self._handshakes):
            task.cancel()
        await super().stop()
