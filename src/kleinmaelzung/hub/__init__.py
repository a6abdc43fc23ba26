"""The hub: routes live data from agents to subscribed clients and commands back; logs all."""

from .app import RunningHub, create_app, run_hub, serve_hub, start_hub
from .config import HubConfig
from .errors import Conflict, HubError, HubStartError
from .store import LogEntry, Record, SqliteStore, Store

__all__ = [
    "Conflict",
    "HubConfig",
    "HubError",
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
