"""Clients of the hub: `Client`, `SyncClient`, and the log, history and export over HTTP."""

from ..protocol import (
    CommandError,
    HandshakeError,
    InstrumentMetadata,
    InstrumentRecord,
    KmzError,
    ProtocolError,
    Sample,
    Status,
)
from .aio import Client
from .calibrations import Calibrations
from .errors import ConnectionLost, HubUnreachable, RequestError, RequestTimeout
from .export import ExportResult, export
from .fleet import get_agent_config, rollback_agent_config, set_agent_config
from .history import HistoryPoint, MissingExtra, fetch_history
from .log import LogEntry, fetch_agents, fetch_log, forget_instrument
from .log_query import LogFilter, query_log, stream_log
from .log_stats import LogStats, fetch_log_stats
from .metadata import get_instrument_metadata, set_instrument_metadata
from .stream import StreamCut
from .subscription import Event, Subscription
from .sync import SyncClient
from .timeline import Timeline, fetch_timeline

__all__ = [
    "Calibrations",
    "Client",
    "CommandError",
    "ConnectionLost",
    "Event",
    "ExportResult",
    "HandshakeError",
    "HistoryPoint",
    "HubUnreachable",
    "InstrumentMetadata",
    "InstrumentRecord",
    "KmzError",
    "LogEntry",
    "LogFilter",
    "LogStats",
    "MissingExtra",
    "ProtocolError",
    "RequestError",
    "RequestTimeout",
    "Sample",
    "Status",
    "StreamCut",
    "Subscription",
    "SyncClient",
    "Timeline",
    "export",
    "fetch_agents",
    "fetch_history",
    "fetch_log",
    "fetch_log_stats",
    "fetch_timeline",
    "forget_instrument",
    "get_agent_config",
    "get_instrument_metadata",
    "query_log",
    "rollback_agent_config",
    "set_agent_config",
    "set_instrument_metadata",
    "stream_log",
]
