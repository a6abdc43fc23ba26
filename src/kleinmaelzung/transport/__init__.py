"""WebSocket plumbing shared by agent and client: URLs and reconnect delays."""

from .backoff import backoff_delays
from .liveness import SocketPeek, SocketState
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
    "SocketPeek",
    "SocketState",
    "backoff_delays",
    "base_url",
    "default_hub_url",
    "websocket_url",
]
