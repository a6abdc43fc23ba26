"""Clients of the hub: an async `Client`, a blocking `SyncClient`, and the traffic log."""

from ..protocol import (
    CommandError,
    HandshakeError,
    InstrumentRecord,
    KmzError,
    ProtocolError,
    Sample,
    Status,
)
from .aio import Client
from .errors import ConnectionLost, HubUnreachable, RequestError, RequestTimeout
from .log import LogEntry, fetch_agents, fetch_log, forget_instrument
from .subscription import Event, Subscription
from .sync import SyncClient

__all__ = [
    "Client",
    "CommandError",
    "ConnectionLost",
    "Event",
    "HandshakeError",
    "HubUnreachable",
    "InstrumentRecord",
    "KmzError",
    "LogEntry",
    "ProtocolError",
    "RequestError",
    "RequestTimeout",
    "Sample",
    "Status",
    "Subscription",
    "SyncClient",
    "fetch_agents",
    "fetch_log",
    "forget_instrument",
]
