"""The traffic log: every message in and out, durable, queryable.

`LogWriter` is the hub's `Store` over any `LogBackend`: SQLite (`SqliteStore`,
the default) or PostgreSQL (`postgres.PostgresBackend`, extra ``postgres``);
`store_for_url` picks one from a ``--log`` URL. `ProcessWriter` is the same
`Store` with its writing in a process of its own (what `kmz hub` runs).
"""

from ...protocol import LogEntry
from .backend import BackendUnavailable, LogBackend
from .base import (
    Direction,
    KnownInstrument,
    LoggedSample,
    LogHealth,
    OnCommitted,
    OnHealth,
    Record,
    Store,
    StoreClosed,
    StoreError,
    StoreUnavailable,
    WriterFailed,
)
from .process import ProcessWriter
from .sqlite import SqliteBackend, SqliteStore
from .urls import LogUrlError, redact_url, store_for_url
from .writer import LogWriter

__all__ = [
    "BackendUnavailable",
    "Direction",
    "KnownInstrument",
    "LogBackend",
    "LogEntry",
    "LogHealth",
    "LogUrlError",
    "LogWriter",
    "LoggedSample",
    "OnCommitted",
    "OnHealth",
    "ProcessWriter",
    "Record",
    "SqliteBackend",
    "SqliteStore",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreUnavailable",
    "WriterFailed",
    "redact_url",
    "store_for_url",
]
