"""The hub: routes live data from agents to subscribed clients and commands back; logs all."""

from .app import HubStartError, RunningHub, create_app, run_hub, serve_hub, start_hub
from .config import HubConfig
from .store import LogEntry, Record, SqliteStore, Store

__all__ = [
    "HubConfig",
    "HubStartError",
    "LogEntry",
    "Record",
    "RunningHub",
    "SqliteStore",
    "Store",
    "create_app",
    "run_hub",
    "serve_hub",
    "start_hub",
]
