"""The traffic log: every message in and out, durable, queryable."""

from ...protocol import LogEntry
from .base import (
    Direction,
    KnownInstrument,
    OnCommitted,
    Record,
    Store,
    StoreClosed,
    StoreError,
    WriterFailed,
)
from .sqlite import SqliteStore

__all__ = [
    "Direction",
    "KnownInstrument",
    "LogEntry",
    "OnCommitted",
    "Record",
    "SqliteStore",
    "Store",
    "StoreClosed",
    "StoreError",
    "WriterFailed",
]
