"""Hub URLs: what a user types, and the WebSocket endpoints derived from it."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORT = 8765
DEFAULT_HUB_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
AGENT_PATH = "/ws/agent"
CLIENT_PATH = "/ws/client"


def default_hub_url() -> str:
    """The hub to use when none is given: $KMZ_HUB, else the local demo hub."""
    return os.environ.get("KMZ_HUB") or DEFAULT_HUB_URL


def base_url(url: str) -> str:
    """Normalise a hub URL to http(s)://host:port, accepting ws(s):// and endpoint paths."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https"):
        raise ValueError(f"hub URL must start with http://, https://, ws:// or wss://: {url!r}")
    if not parts.hostname:
        raise ValueError(f"hub URL has no host: {url!r}")
    path = parts.path
    for endpoint in (AGENT_PATH, CLIENT_PATH):
        if path.endswith(endpoint):
            path = path[: -len(endpoint)]
    return urlunsplit((scheme, parts.netloc, path.rstrip("/"), "", ""))


def websocket_url(url: str, endpoint: str) -> str:
    """The ws(s):// URL of `endpoint` (AGENT_PATH or CLIENT_PATH) on the hub at `url`."""
    base = base_url(url)
    scheme, rest = base.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{endpoint}"
