"""Configuration held at the hub, for admins' tools: `kmz agent-config get|set|rollback`."""

from __future__ import annotations

import os
from typing import TypeVar

import msgspec

from ..protocol import (
    AgentConfigView,
    ConfigChange,
    ConfigOutcome,
)
from ..transport import base_url
from .http import decode_answer, request

T = TypeVar("T")

#: A change waits for the agent (up to 30 s at the hub): the request waits longer.
CHANGE_TIMEOUT_S = 40.0


def _endpoint(url: str, agent: str, suffix: str = "") -> str:
    return f"{base_url(url)}/api/agents/{agent}/config{suffix}"


def _decode(body: bytes, kind: type[T], endpoint: str) -> T:
    return decode_answer(msgspec.json.Decoder(kind), body, endpoint)


async def get_agent_config(
    url: str,
    agent: str,
    *,
    timeout_s: float = 10.0,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> AgentConfigView:
    """The instrument configuration `agent` runs, as the hub at `url` holds it (admin)."""
    endpoint = _endpoint(url, agent)
    body = await request(
        "GET", endpoint, timeout_s=timeout_s, token=token, ca_file=ca_file, pin_sha256=pin_sha256
    )
    return _decode(body, AgentConfigView, endpoint)


async def set_agent_config(
    url: str,
    agent: str,
    config: str,
    *,
    source: str = "hub",
    timeout_s: float = CHANGE_TIMEOUT_S,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> ConfigOutcome:
    """Send `agent` this configuration (TOML); its outcome, or `RequestError` if refused."""
    endpoint = _endpoint(url, agent)
    body = await request(
        "PUT",
        endpoint,
        timeout_s=timeout_s,
        token=token,
        ca_file=ca_file,
        pin_sha256=pin_sha256,
        json_body=msgspec.json.encode(ConfigChange(config=config, source=source)),
    )
    return _decode(body, ConfigOutcome, endpoint)


async def rollback_agent_config(
    url: str,
    agent: str,
    *,
    timeout_s: float = CHANGE_TIMEOUT_S,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> ConfigOutcome:
    """Have `agent` run its previous revision again; its outcome, or `RequestError`."""
    endpoint = _endpoint(url, agent, "/rollback")
    body = await request(
        "POST", endpoint, timeout_s=timeout_s, token=token, ca_file=ca_file, pin_sha256=pin_sha256
    )
    return _decode(body, ConfigOutcome, endpoint)
