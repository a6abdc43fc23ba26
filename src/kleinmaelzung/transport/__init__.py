"""The peer side of a link to the hub, for agent and client: URLs, connecting, reconnecting."""

from .backoff import Backoff, backoff_delays
from .connection import REPEAT_EVERY, Connection, Connector, Failure
from .errors import (
    ConnectionLost,
    HandshakeFailed,
    Healing,
    HubUnreachable,
    close_healing,
    close_in_words,
    describe,
    unreachable,
)
from .liveness import SocketPeek, SocketState
from .tls import Trust, TrustError, certificate_sha256, parse_pin
from .urls import (
    AGENT_PATH,
    CLIENT_PATH,
    DEFAULT_HUB_URL,
    DEFAULT_PORT,
    base_url,
    default_hub_url,
    websocket_url,
)

__all__ = [
    "AGENT_PATH",
    "CLIENT_PATH",
    "DEFAULT_HUB_URL",
    "DEFAULT_PORT",
    "REPEAT_EVERY",
    "Backoff",
    "Connection",
    "ConnectionLost",
    "Connector",
    "Failure",
    "HandshakeFailed",
    "Healing",
    "HubUnreachable",
    "SocketPeek",
    "SocketState",
    "Trust",
    "TrustError",
    "backoff_delays",
    "base_url",
    "certificate_sha256",
    "close_healing",
    "close_in_words",
    "default_hub_url",
    "describe",
    "parse_pin",
    "unreachable",
    "websocket_url",
]
