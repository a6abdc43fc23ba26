"""The traffic log: every message in and out, durable, queryable."""

from .base import Direction, LogEntry, OnCommitted, Record, Store
from .sqlite import SqliteStore

__all__ = ["Direction", "LogEntry", "OnCommitted", "Record", "SqliteStore", "Store"]
