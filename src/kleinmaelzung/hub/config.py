"""HubConfig: where the hub listens, where it keeps its data, its limits."""

from __future__ import annotations

from pathlib import Path

import msgspec

from ..protocol import Limits, Timeouts
from ..transport import DEFAULT_PORT


class HubConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a hub needs to start."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = Path("kmz-data")
    #: Where the traffic log is: ``sqlite:///path`` or ``postgresql://user@host/db``
    #: (see `store.store_for_url`); None for SQLite at `traffic_db`.
    log_url: str | None = None
    name: str = "kmz-hub"
    #: An agent whose clock is further than this from the hub's is flagged
    #: (logged, and `clock_ok: false` in `/api/agents`).
    clock_warning_s: float = 1.0
    #: Serve beyond loopback without auth (no credentials store): refused otherwise.
    insecure: bool = False
    #: Origins (``https://dash.lab.example``) whose pages may use the hub,
    #: besides the hub's own; browsers' other origins are refused (`auth.web`).
    allowed_origins: tuple[str, ...] = ()
    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()

    @property
    def traffic_db(self) -> Path:
        """The SQLite traffic log file."""
        return self.data_dir / "traffic.sqlite3"
