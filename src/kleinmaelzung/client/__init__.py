"""Clients of the hub: an async `Client`, a blocking `SyncClient`, and the traffic log."""

from ..protocol import CommandError, HandshakeError, InstrumentRecord, Sample, Status
from .aio import Client, ConnectionLost, HubUnreachable, RequestError, Subscription, fetch_log
from .log import LogEntry
from .sync import SyncClient

__all__ = [
    "Client",
    "CommandError",
    "ConnectionLost",
    "HandshakeError",
    "HubUnreachable",
    "InstrumentRecord",
    "LogEntry",
    "RequestError",
    "Sample",
    "Status",
    "Subscription",
    "SyncClient",
    "fetch_log",
]
