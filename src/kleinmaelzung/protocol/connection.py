"""Connection state machines for both ends, without I/O.

Feed a frame with `receive()`, get back what happened (`Received` or
`Refused`). The I/O layer (hub views, agent link, client) sends what it is told
to and closes when a `Refused` carries a close code. Allowed transitions are the
tables below.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .codec import (
    Decoder,
    Invalid,
    agent_decoder,
    client_decoder,
    hub_to_agent_decoder,
    hub_to_client_decoder,
)
from .errors import CloseCode, ErrorCode, HandshakeError
from .limits import Limits
from .messages import (
    SUPPORTED_PROTOCOLS,
    AgentHello,
    ClientHello,
    Command,
    Data,
    Error,
    Welcome,
)

M = TypeVar("M")


class PeerKind(enum.StrEnum):
    """Who is on the far side of a hub connection."""

    AGENT = "agent"
    CLIENT = "client"


class State(enum.Enum):
    """Where a connection is in its life."""

    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Received(Generic[M]):
    """A valid message to act on."""

    message: M


@dataclass(frozen=True, slots=True)
class Refused:
    """Send `error` back; if `close` is set, close the connection with it."""

    error: Error
    close: CloseCode | None = None


_HELLO: dict[PeerKind, type[Any]] = {PeerKind.AGENT: AgentHello, PeerKind.CLIENT: ClientHello}


class HubConnection(Generic[M]):
    """The hub's side of one agent or client connection."""

    def __init__(self, kind: PeerKind, decoder: Decoder[M], limits: Limits | None = None) -> None:
        self.kind = kind
        self.state = State.HANDSHAKE
        self.hello: AgentHello | ClientHello | None = None
        self._decoder = decoder
        self._limits = limits or Limits()
        self._pending: set[str] = set()

    def receive(self, data: bytes | str) -> Received[M] | Refused:
        """Decode one frame and check it against the connection's state."""
        if self.state is State.CLOSED:
            return Refused(Error(code=ErrorCode.UNEXPECTED_MESSAGE, message="connection is closed"))
        message = self._decoder.decode(data)
        if isinstance(message, Invalid):
            if self.state is State.HANDSHAKE:
                return self._close(message.error, CloseCode.HELLO_EXPECTED)
            return Refused(message.error)
        hello_type = _HELLO[self.kind]
        if self.state is State.HANDSHAKE:
            if not isinstance(message, hello_type):
                error = Error(
                    code=ErrorCode.HELLO_EXPECTED,
                    message=f"the first message must be {hello_type.__struct_config__.tag!r}",
                )
                return self._close(error, CloseCode.HELLO_EXPECTED)
            if message.protocol not in SUPPORTED_PROTOCOLS:
                error = Error(
                    code=ErrorCode.UNSUPPORTED_PROTOCOL,
                    message=f"protocol {message.protocol} is not supported; this hub speaks "
                    f"{sorted(SUPPORTED_PROTOCOLS)}",
                )
                return self._close(error, CloseCode.UNSUPPORTED_PROTOCOL)
            self.hello = message
            self.state = State.OPEN
            return Received(message)
        if isinstance(message, hello_type):
            return Refused(
                Error(code=ErrorCode.UNEXPECTED_MESSAGE, message="hello was already received")
            )
        if isinstance(message, Data) and len(message.samples) > self._limits.max_samples_per_data:
            return Refused(
                Error(
                    code=ErrorCode.MESSAGE_TOO_LARGE,
                    message=f"a data message carries at most {self._limits.max_samples_per_data} "
                    f"samples; this one has {len(message.samples)} (none were accepted)",
                )
            )
        if isinstance(message, Command):
            refusal = self._begin_command(message.id)
            if refusal is not None:
                return refusal
        return Received(message)

    def refuse_handshake(self, error: Error, close: CloseCode) -> Refused:
        """Reject a hello after inspecting it (bad token, duplicate agent id)."""
        return self._close(error, close)

    def complete_command(self, command_id: str) -> None:
        """Forget a command id once its reply has been sent."""
        self._pending.discard(command_id)

    @property
    def pending_commands(self) -> frozenset[str]:
        """Ids of this peer's commands still awaiting a reply."""
        return frozenset(self._pending)

    def close(self) -> None:
        """Mark the connection closed."""
        self.state = State.CLOSED

    def _begin_command(self, command_id: str) -> Refused | None:
        if command_id in self._pending:
            return Refused(
                Error(
                    code=ErrorCode.DUPLICATE_ID,
                    message=f"command id {command_id!r} is still pending",
                    id=command_id,
                )
            )
        if len(self._pending) >= self._limits.max_pending_commands:
            return Refused(
                Error(
                    code=ErrorCode.TOO_MANY_PENDING,
                    message=f"at most {self._limits.max_pending_commands} commands may be "
                    "pending per connection",
                    id=command_id,
                )
            )
        self._pending.add(command_id)
        return None

    def _close(self, error: Error, close: CloseCode) -> Refused:
        self.state = State.CLOSED
        return Refused(error, close)


class PeerConnection(Generic[M]):
    """An agent's or a client's side of its connection to the hub."""

    def __init__(self, decoder: Decoder[M]) -> None:
        self.state = State.HANDSHAKE
        self.welcome: Welcome | None = None
        self._decoder = decoder

    def receive(self, data: bytes | str) -> Received[M] | Refused:
        """Decode one frame from the hub; raise `HandshakeError` if the hub refused us."""
        message = self._decoder.decode(data)
        if isinstance(message, Invalid):
            # The hub sent a frame we cannot read: its bug or a version skew.
            # Reported, and survivable once the handshake is done.
            if self.state is State.HANDSHAKE:
                self.state = State.CLOSED
                raise HandshakeError(
                    message.error.code_enum(), message.error.message, CloseCode.HELLO_EXPECTED
                )
            return Refused(message.error)
        if self.state is State.HANDSHAKE:
            if isinstance(message, Welcome):
                self.welcome = message
                self.state = State.OPEN
                return Received(message)
            self.state = State.CLOSED
            if isinstance(message, Error):
                code = message.code_enum()
                raise HandshakeError(
                    code, message.message, _CLOSE_FOR.get(code, CloseCode.HELLO_EXPECTED)
                )
            raise HandshakeError(
                ErrorCode.UNEXPECTED_MESSAGE,
                "the hub did not answer the hello with 'welcome'",
                CloseCode.HELLO_EXPECTED,
            )
        return Received(message)


_CLOSE_FOR = {
    ErrorCode.UNAUTHORIZED: CloseCode.UNAUTHORIZED,
    ErrorCode.UNSUPPORTED_PROTOCOL: CloseCode.UNSUPPORTED_PROTOCOL,
    ErrorCode.DUPLICATE_AGENT: CloseCode.DUPLICATE_AGENT,
}


def hub_agent_connection(limits: Limits | None = None) -> HubConnection[Any]:
    """The hub's state machine for an agent connection."""
    return HubConnection(PeerKind.AGENT, agent_decoder(limits), limits)


def hub_client_connection(limits: Limits | None = None) -> HubConnection[Any]:
    """The hub's state machine for a client connection."""
    return HubConnection(PeerKind.CLIENT, client_decoder(limits), limits)


def agent_connection(limits: Limits | None = None) -> PeerConnection[Any]:
    """An agent's state machine for its hub connection."""
    return PeerConnection(hub_to_agent_decoder(limits))


def client_connection(limits: Limits | None = None) -> PeerConnection[Any]:
    """A client's state machine for its hub connection."""
    return PeerConnection(hub_to_client_decoder(limits))
