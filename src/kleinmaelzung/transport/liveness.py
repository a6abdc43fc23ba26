"""Whether the far end of a socket has closed, without reading what is still to be read."""

from __future__ import annotations

import enum
import os
import socket


class SocketState(enum.Enum):
    """What a non-blocking peek at a socket's receive queue says."""

    #: Nothing unread, no end of stream: open as far as anyone can tell.
    OPEN = "open"
    #: Bytes wait to be read (perhaps a close behind them): read them first.
    PENDING = "pending"
    #: The peer closed (end of stream or reset), or there is no socket.
    CLOSED = "closed"


class SocketPeek:
    """Peeks at a connection's socket without consuming anything; one system call a look.

    An agent that was stopped wakes with the hub's frames and the hub's FIN
    in its socket; asyncio reads the frames first and the end of stream one
    loop iteration later, after a command read from it could have started.
    The kernel already knows: a peek that returns no bytes is end of stream.
    """

    def __init__(self, sock: object) -> None:
        # asyncio hands out a TransportSocket, which cannot recv(): peek
        # through a duplicate of its descriptor (the same kernel socket).
        fileno = getattr(sock, "fileno", None)
        self._sock: socket.socket | None = None
        if callable(fileno):
            try:
                self._sock = socket.socket(fileno=os.dup(fileno()))
            except OSError:
                self._sock = None

    def state(self) -> SocketState:
        """What the socket's receive queue says now."""
        if self._sock is None:
            return SocketState.OPEN  # nothing to look at: the link's own view decides
        try:
            data = self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return SocketState.OPEN
        except OSError:
            return SocketState.CLOSED
        return SocketState.PENDING if data else SocketState.CLOSED

    def close(self) -> None:
        """Release the duplicate descriptor."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
