"""Connection state machines for both ends, without I/O.

Feed a frame with `receive()`, get back what happened (`Received` or
`Refused`); a peer asks `send()` for the frame of each message it sends, and
gets a `Refused` instead when the message must not go out. Both sides report
refusals the same way: as values, never raised. The I/O layer (hub views,
`transport.connection`) sends what it is told to and closes when a `Refused`
carries a close code. Allowed transitions are the tables below.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, get_args

from .codec import (
    Decoder,
    Invalid,
    agent_decoder,
    client_decoder,
    encode,
    hub_to_agent_decoder,
    hub_to_client_decoder,
)
from .errors import CloseCode, ErrorCode
from .limits import Limits
from .messages import (
    SUPPORTED_PROTOCOLS,
    AgentHello,
    AgentMessage,
    ClientHello,
    ClientMessage,
    Command,
    Data,
    Error,
    HubToAgentMessage,
    HubToClientMessage,
    Subscribe,
    Unsubscribe,
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
    """Send `error` back; if `close` is set, close the connection with it.

    A `silent` refusal was already answered (a flood of frames over the rate
    limit): drop the frame without answering or logging it again.
    """

    error: Error
    close: CloseCode | None = None
    silent: bool = False


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
        #: The client's active patterns, counted against `max_subscriptions`.
        self._patterns: set[str] = set()
        #: Frames refused for coming too fast, over the connection's life.
        self.rate_refused = 0
        # A token bucket: `_tokens` messages may come now; it refills at the
        # rate up to the burst. `_flooding_since` is when the current run of
        # refusals began (None while under the rate).
        self._tokens = float(self._limits.client_burst_messages)
        self._refilled: float | None = None
        self._flooding_since: float | None = None

    def receive(self, data: bytes | str, now: float | None = None) -> Received[M] | Refused:
        """Decode one frame and check it against the connection's state.

        `now` (monotonic seconds) paces a client to `Limits.client_messages_per_s`;
        without it, frames are not rate-limited.
        """
        if self.state is State.CLOSED:
            return Refused(Error(code=ErrorCode.UNEXPECTED_MESSAGE, message="connection is closed"))
        if now is not None and self.kind is PeerKind.CLIENT and self.state is State.OPEN:
            # Before decoding: a flood must cost the hub as little as possible.
            refusal = self._pace(now)
            if refusal is not None:
                return refusal
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
            limit = self._limits.max_instruments_per_agent
            if isinstance(message, AgentHello) and len(message.instruments) > limit:
                error = Error(
                    code=ErrorCode.TOO_MANY_INSTRUMENTS,
                    message=f"this hello announces {len(message.instruments)} instruments; "
                    f"an agent may serve at most {limit} (split them over several agents)",
                )
                return self._close(error, CloseCode.TOO_MANY_INSTRUMENTS)
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
        elif isinstance(message, Subscribe):
            new = set(message.patterns) - self._patterns
            limit = self._limits.max_subscriptions
            if len(self._patterns) + len(new) > limit:
                return Refused(
                    Error(
                        code=ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                        message=f"at most {limit} patterns may be active per connection; "
                        f"{len(self._patterns)} are, and this would add {len(new)} "
                        "(none were added; unsubscribe some, or use a wider pattern)",
                        id=message.id,
                    )
                )
            self._patterns |= new
        elif isinstance(message, Unsubscribe):
            self._patterns.difference_update(message.patterns)
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

    def check_send(self, message: Any) -> Error | None:
        """Why the hub must not send `message` on this connection now, or None.

        Only what the hub sends to this kind of peer, and nothing on a closed
        connection; refusing is the hub's own bug, never the peer's.
        """
        if self.state is State.CLOSED:
            return Error(code=ErrorCode.UNEXPECTED_MESSAGE, message="the connection is closed")
        if not isinstance(message, _RECEIVES[self.kind]):
            return Error(
                code=ErrorCode.UNEXPECTED_MESSAGE,
                message=f"{_tag(message)!r} is not a message the hub sends to "
                f"{'an' if self.kind is PeerKind.AGENT else 'a'} {self.kind}",
            )
        return None

    def close(self) -> None:
        """Mark the connection closed."""
        self.state = State.CLOSED

    def _pace(self, now: float) -> Refused | None:
        """Take a token for one frame, or say why the frame is refused."""
        limits = self._limits
        burst = float(limits.client_burst_messages)
        if self._refilled is not None:
            self._tokens = min(
                burst, self._tokens + (now - self._refilled) * limits.client_messages_per_s
            )
        self._refilled = now
        if self._flooding_since is not None and self._tokens >= burst:
            self._flooding_since = None  # it paused long enough: a new start
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        self.rate_refused += 1
        error = Error(
            code=ErrorCode.RATE_LIMITED,
            message=f"more than {limits.client_messages_per_s:g} messages per second "
            f"(bursts of {limits.client_burst_messages}); frames are dropped unanswered "
            f"until the rate falls, and the connection closes after "
            f"{limits.rate_limited_close_s:g} s of this",
        )
        if self._flooding_since is None:
            self._flooding_since = now
            return Refused(error)
        if now - self._flooding_since >= limits.rate_limited_close_s:
            # Still open: the error goes out before the close frame.
            return Refused(error, CloseCode.RATE_LIMITED)
        return Refused(error, silent=True)

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
    """An agent's or a client's side of its connection to the hub.

    Refusals are values, as on the hub's side: `receive()` and `send()` never
    raise, they return a `Refused`. What differs is who is at fault and so
    what the I/O layer does with it:

    - `receive()` refuses what the hub sent. During the handshake that ends
      the connection (`close` is set): the hub refused our hello (`error` is
      the hub's own error), or answered it with something other than a
      welcome. After the welcome an unreadable frame is reported and survived,
      never answered: a client cannot send `error`, and an agent answering the
      hub's errors with errors could loop.
    - `send()` refuses what we were about to send (nothing but the hello before
      the welcome; only messages of this side's direction; within the limits).
      That is a bug on this side: the frame is not sent and the connection
      stays as it was.
    """

    def __init__(self, kind: PeerKind, decoder: Decoder[M], limits: Limits | None = None) -> None:
        self.kind = kind
        self.state = State.HANDSHAKE
        self.welcome: Welcome | None = None
        self.hello_sent = False
        self._decoder = decoder
        self._limits = limits or Limits()

    def receive(self, data: bytes | str) -> Received[M] | Refused:
        """Decode one frame from the hub and check it against the connection's state."""
        if self.state is State.CLOSED:
            return Refused(Error(code=ErrorCode.UNEXPECTED_MESSAGE, message="connection is closed"))
        message = self._decoder.decode(data)
        if isinstance(message, Invalid):
            # The hub sent a frame we cannot read: its bug or a version skew.
            # Reported, and survivable once the handshake is done.
            if self.state is State.HANDSHAKE:
                return self._close(message.error, CloseCode.HELLO_EXPECTED)
            return Refused(message.error)
        if self.state is State.HANDSHAKE:
            if isinstance(message, Welcome) and self.hello_sent:
                self.welcome = message
                self.state = State.OPEN
                return Received(message)
            if isinstance(message, Error):
                code = message.code_enum()
                return self._close(message, _CLOSE_FOR.get(code, CloseCode.HELLO_EXPECTED))
            return self._close(
                Error(
                    code=ErrorCode.UNEXPECTED_MESSAGE,
                    message="the hub did not answer the hello with 'welcome' but with "
                    f"{_tag(message)!r}",
                ),
                CloseCode.HELLO_EXPECTED,
            )
        if isinstance(message, Welcome):
            return Refused(
                Error(code=ErrorCode.UNEXPECTED_MESSAGE, message="welcome was already received")
            )
        return Received(message)

    def send(self, message: Any) -> bytes | Refused:
        """The frame that carries `message`, or why this side must not send it now."""
        refusal = self._check_send(message)
        if refusal is not None:
            return Refused(refusal)
        frame = encode(message)
        if len(frame) > self._limits.max_message_bytes:
            return Refused(
                Error(
                    code=ErrorCode.MESSAGE_TOO_LARGE,
                    message=f"this {_tag(message)} is {len(frame)} bytes; the hub accepts at "
                    f"most {self._limits.max_message_bytes}",
                )
            )
        if isinstance(message, _HELLO[self.kind]):
            self.hello_sent = True
        return frame

    def close(self) -> None:
        """Mark the connection closed."""
        self.state = State.CLOSED

    def _check_send(self, message: Any) -> Error | None:
        hello_type = _HELLO[self.kind]
        if self.state is State.CLOSED:
            return Error(code=ErrorCode.UNEXPECTED_MESSAGE, message="the connection is closed")
        if isinstance(message, hello_type):
            if self.hello_sent:
                return Error(code=ErrorCode.UNEXPECTED_MESSAGE, message="hello was already sent")
            return None
        if self.state is State.HANDSHAKE:
            return Error(
                code=ErrorCode.HELLO_EXPECTED,
                message=f"nothing but {_tag(hello_type)!r} may be sent before the welcome, "
                f"not {_tag(message)!r}",
            )
        if not isinstance(message, _SENDS[self.kind]):
            return Error(
                code=ErrorCode.UNEXPECTED_MESSAGE,
                message=f"{_tag(message)!r} is not a message an {self.kind} sends"
                if self.kind is PeerKind.AGENT
                else f"{_tag(message)!r} is not a message a {self.kind} sends",
            )
        if isinstance(message, Data) and len(message.samples) > self._limits.max_samples_per_data:
            return Error(
                code=ErrorCode.MESSAGE_TOO_LARGE,
                message=f"a data message carries at most {self._limits.max_samples_per_data} "
                f"samples; this one has {len(message.samples)}",
            )
        return None

    def _close(self, error: Error, close: CloseCode) -> Refused:
        self.state = State.CLOSED
        return Refused(error, close)


def _tag(message: Any) -> str:
    config = getattr(message, "__struct_config__", None)
    return str(config.tag) if config is not None and config.tag else type(message).__name__


#: What each side may send once welcomed: its direction's messages, but the hello.
_SENDS: dict[PeerKind, tuple[type[Any], ...]] = {
    PeerKind.AGENT: tuple(t for t in get_args(AgentMessage) if t is not AgentHello),
    PeerKind.CLIENT: tuple(t for t in get_args(ClientMessage) if t is not ClientHello),
}

#: What the hub sends to each kind of peer.
_RECEIVES: dict[PeerKind, tuple[type[Any], ...]] = {
    PeerKind.AGENT: get_args(HubToAgentMessage),
    PeerKind.CLIENT: get_args(HubToClientMessage),
}

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
    return PeerConnection(PeerKind.AGENT, hub_to_agent_decoder(limits), limits)


def client_connection(limits: Limits | None = None) -> PeerConnection[Any]:
    """A client's state machine for its hub connection."""
    return PeerConnection(PeerKind.CLIENT, hub_to_client_decoder(limits), limits)
