"""Whether a command from the hub may still start: its deadline, and the connection it came on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from ..protocol import ErrorCode
from ..transport import SocketState

#: Loop iterations a command waits for the link to read what has arrived
#: before it starts; each is one pass of the event loop, microseconds.
_CATCH_UP_ITERATIONS = 100


@dataclass(frozen=True, slots=True)
class Permit:
    """Checked right before a command touches the instrument, after it waited for the port.

    A command that waited (for the port, or in a socket buffer while the
    agent was stopped) must not start once the hub has stopped waiting for it,
    nor once the connection it came on is gone: the hub has answered for it
    by then, and a late setpoint is a physical act nobody expects.
    """

    #: Seconds until the command's deadline; zero or less once it has passed.
    remaining_s: Callable[[], float]
    #: Whether the link still holds the connection the command came on.
    live: Callable[[], bool]
    #: A peek at that connection's socket.
    socket_state: Callable[[], SocketState]

    async def refusal(self) -> tuple[ErrorCode, str] | None:
        """Why the command must not start now, or None if it may.

        Bytes still unread on the connection may be its close: the link reads
        them first (a few loop iterations), so a command never starts from a
        connection whose end has already arrived.
        """
        for _ in range(_CATCH_UP_ITERATIONS):
            if not self.live() or self.socket_state() is not SocketState.PENDING:
                break
            await asyncio.sleep(0)
        if not self.live() or self.socket_state() is SocketState.CLOSED:
            return (
                ErrorCode.AGENT_DISCONNECTED,
                "not run: the connection it came on closed before it could start",
            )
        late_s = -self.remaining_s()
        if late_s >= 0:
            return (
                ErrorCode.DEADLINE_EXCEEDED,
                f"not run: its deadline passed {late_s:.3f} s before it could start",
            )
        return None


#: For commands run outside a hub connection (tests, tools): always may start.
ALWAYS = Permit(
    remaining_s=lambda: float("inf"), live=lambda: True, socket_state=lambda: SocketState.OPEN
)
