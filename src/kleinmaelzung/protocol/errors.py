"""Error codes, close codes and the exception tree of the protocol.

Errors that cross the wire are values (`ErrorCode` inside an `Error` or a
`Reply`); exceptions exist only inside a process::

    KmzError
    ├── ProtocolError        the peer sent something we cannot accept
    │   └── HandshakeError   ... before or during the handshake
    └── CommandError         a command came back with ok=false (client side)
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Snake_case codes carried by `Error` and failed `Reply` messages."""

    # The peer's bytes or message shape.
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    MESSAGE_TOO_LARGE = "message_too_large"
    #: Arrays and objects nested deeper than `Limits.max_nesting_depth`.
    NESTING_TOO_DEEP = "nesting_too_deep"
    UNEXPECTED_MESSAGE = "unexpected_message"
    # Limits per connection (see `Limits`).
    #: More messages per second than `Limits.client_messages_per_s` allows.
    RATE_LIMITED = "rate_limited"
    #: More patterns at once than `Limits.max_subscriptions`.
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    #: A hello announcing more than `Limits.max_instruments_per_agent`.
    TOO_MANY_INSTRUMENTS = "too_many_instruments"
    #: (HTTP) more connections than the hub holds, in total or from one address.
    TOO_MANY_CONNECTIONS = "too_many_connections"
    # Handshake.
    HELLO_EXPECTED = "hello_expected"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    #: No token, or a wrong, expired or revoked one (close 4001: do not retry as is).
    UNAUTHORIZED = "unauthorized"
    #: The token is good but its grant does not allow this (an instrument or
    #: command outside it, another agent's id, a viewer's command).
    FORBIDDEN = "forbidden"
    DUPLICATE_AGENT = "duplicate_agent"
    # Subscriptions and ids.
    INVALID_INSTRUMENT_ID = "invalid_instrument_id"
    DUPLICATE_ID = "duplicate_id"
    #: A sample's seq jumps absurdly beyond the newest logged of its run.
    SEQ_OUT_OF_RANGE = "seq_out_of_range"
    # Commands.
    UNKNOWN_INSTRUMENT = "unknown_instrument"
    INSTRUMENT_OFFLINE = "instrument_offline"
    #: An operator asked to forget an instrument that a connected agent serves.
    INSTRUMENT_ONLINE = "instrument_online"
    UNKNOWN_COMMAND = "unknown_command"
    INVALID_ARGUMENTS = "invalid_arguments"
    #: The instrument did not answer in time; it may have acted.
    COMMAND_TIMEOUT = "command_timeout"
    #: The command did not run: its deadline passed before it could start.
    DEADLINE_EXCEEDED = "deadline_exceeded"
    #: Nobody can say whether the command ran (the agent went silent or away,
    #: or the client lost the hub after sending it); it cannot start after
    #: its deadline.
    OUTCOME_UNKNOWN = "outcome_unknown"
    #: The command did not run: the agent's connection to the hub closed
    #: before it could start.
    AGENT_DISCONNECTED = "agent_disconnected"
    #: Protocol 4: the hub holding the instrument's agent was lost (shut down,
    #: or silent on the bus) with the command in flight through it: it may
    #: have run, and it cannot start after its deadline.
    HUB_LOST = "hub_lost"
    #: A command's idempotency key was used before for a different command.
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    #: Another operator holds the instrument's control lease.
    LEASE_HELD = "lease_held"
    INSTRUMENT_ERROR = "instrument_error"
    INSTRUMENT_UNREACHABLE = "instrument_unreachable"
    TOO_MANY_PENDING = "too_many_pending"
    #: The hub's traffic log cannot keep up or cannot be written: samples are
    #: forwarded live but not logged nor acknowledged; the agent keeps them
    #: and is asked to reconnect and resend them when the log is back.
    LOG_DEGRADED = "log_degraded"
    # Configuration held at the hub (protocol 4, `fleet`).
    #: A configuration the agent will not run: its located error says where.
    INVALID_CONFIG = "invalid_config"
    #: The agent's own file says ``remote_config = "refuse"``: it is the only source.
    REMOTE_CONFIG_REFUSED = "remote_config_refused"
    #: Another configuration change of this agent is under way.
    CONFIG_BUSY = "config_busy"
    #: No earlier revision to go back to.
    NO_PREVIOUS_REVISION = "no_previous_revision"
    #: The agent is not connected (configuration goes to connected agents only).
    AGENT_OFFLINE = "agent_offline"
    #: No agent of that id has ever connected to this hub.
    UNKNOWN_AGENT = "unknown_agent"
    # Anything else: a bug on the side that reports it.
    INTERNAL_ERROR = "internal_error"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the hub uses (4000-4999 are application codes)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    #: The hub cannot check credentials right now: retry later.
    TRY_AGAIN_LATER = 1013
    HELLO_EXPECTED = 4000
    UNAUTHORIZED = 4001
    UNSUPPORTED_PROTOCOL = 4002
    DUPLICATE_AGENT = 4003
    HANDSHAKE_TIMEOUT = 4004
    SLOW_CONSUMER = 4005
    TOO_MANY_INSTRUMENTS = 4006
    RATE_LIMITED = 4007


class KmzError(Exception):
    """Base of every exception raised by kleinmaelzung."""


class ProtocolError(KmzError):
    """The peer broke the protocol; carries the code to report."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class HandshakeError(ProtocolError):
    """The handshake failed; the connection closes with `close_code`."""

    def __init__(self, code: ErrorCode, message: str, close_code: CloseCode) -> None:
        super().__init__(code, message)
        self.close_code = close_code


class CommandError(KmzError):
    """A command was answered with ok=false."""

    def __init__(self, code: str, message: str, *, instrument: str = "", name: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.instrument = instrument
        self.name = name
