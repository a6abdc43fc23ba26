"""HubConfig: where the hub listens, where it keeps its data, its limits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import msgspec

from ..configfile import convert, env_overrides, merged, read_toml
from ..protocol import Limits, Timeouts
from ..transport import DEFAULT_PORT
from .bus import PREFIX_REGEX
from .store.retention import RetentionPolicy


class HubConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a hub needs to start."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = Path("kmz-data")
    #: Where the traffic log is: ``sqlite:///path`` or ``postgresql://user@host/db``
    #: (see `store.store_for_url`); None for SQLite at `traffic_db`.
    log_url: str | None = None
    #: Seconds the log's writes may fail, or its backlog stay over high water,
    #: before it is degraded: live data is then forwarded without being logged
    #: (`handlers`), and /api/health and /api/ready say why.
    log_degraded_after_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    name: str = "kmz-hub"
    #: An agent whose clock is further than this from the hub's is flagged
    #: (logged, and `clock_ok: false` in `/api/agents`).
    clock_warning_s: float = 1.0
    #: Serve beyond loopback without auth (no credentials store): refused otherwise.
    insecure: bool = False
    #: Origins (``https://dash.lab.example``) whose pages may use the hub,
    #: besides the hub's own; browsers' other origins are refused (`auth.web`).
    allowed_origins: tuple[str, ...] = ()
    #: Serve https:// and wss:// with this certificate (PEM, the chain after
    #: it) and its unencrypted key; both or neither (`hub.tls`).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Several hubs as one: the bus they share, ``nats://host:4222`` (or
    #: ``tls://``; extra ``kleinmaelzung[nats]``). None: this hub alone.
    bus: Annotated[str, msgspec.Meta(pattern=r"^(nats|tls)://[^\s/]+$")] | None = None
    #: The first tokens of every subject this hub uses on the bus: hubs with
    #: the same prefix are one installation.
    bus_prefix: Annotated[str, msgspec.Meta(pattern=PREFIX_REGEX)] = "kmz"
    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()
    #: How long the traffic log keeps each kind of entry (`store.retention`).
    retention: RetentionPolicy = RetentionPolicy()

    @property
    def traffic_db(self) -> Path:
        """The SQLite traffic log file."""
        return self.data_dir / "traffic.sqlite3"


#: What a user should write, by key, for messages that say "expected ...".
_HINTS = {
    "host": 'an address such as "127.0.0.1" or "0.0.0.0"',
    "port": "a TCP port such as 8765",
    "data_dir": 'a folder such as "/var/lib/kleinmaelzung"',
    "log_url": 'a URL such as "sqlite:///var/lib/kmz/traffic.sqlite3"',
    "log_degraded_after_s": "a number of seconds such as 10.0",
    "insecure": "true or false",
    "allowed_origins": 'a list of origins such as ["https://dash.lab.example"]',
    "tls_cert": 'a PEM file such as "/etc/kleinmaelzung/hub.crt"',
    "tls_key": 'a PEM file such as "/etc/kleinmaelzung/hub.key"',
    "bus": 'a NATS server URL such as "nats://127.0.0.1:4222"',
    "bus_prefix": 'dot-separated words of letters, digits, "_" or "-", such as "kmz"',
}
#: Environment variables that set what a config file would: KMZ_HUB_PORT, and
#: KMZ_HUB_LIMITS__MAX_CONNECTIONS for a table's key.
ENV_PREFIX = "KMZ_HUB_"


def example_config() -> str:
    """A commented config with every setting at its default (`kmz hub --example-config`)."""
    return (resources.files(__package__) / "example-hub.toml").read_text(encoding="utf-8")


def load_hub_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> HubConfig:
    """The hub's config: defaults, then the file at `path`, then `KMZ_HUB_*` variables of
    `env`, then `overrides` (command-line flags).

    Raises `ConfigFileError` naming the file (or variable), the key and what
    was expected.
    """
    raw: dict[str, Any] = read_toml(path) if path is not None else {}
    source = str(path) if path is not None else "hub config"
    config = convert(raw, HubConfig, source, _HINTS)
    from_env = env_overrides(ENV_PREFIX, env if env is not None else os.environ, TABLES)
    if from_env:
        config = convert(
            merged(msgspec.to_builtins(config, enc_hook=str), from_env),
            HubConfig,
            f"{ENV_PREFIX}* environment variables",
            _HINTS,
        )
    if overrides:
        config = msgspec.structs.replace(config, **overrides)
    return config


TABLES = ("limits", "timeouts", "retention")
