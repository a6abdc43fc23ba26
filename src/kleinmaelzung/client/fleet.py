"""Configuration held at the hub, for admins' tools: `kmz agent-config get|set|rollback`."""

from __future__ import annotations

import os

import msgspec

from ..protocol import (
    AgentConfigView,
    ConfigChange,
    ConfigOutcome,
)
from ..transport import base_url
from .http import decode_answer, get_decoded, request

_view_decoder = msgspec.json.Decoder(AgentConfigView)
_outcome_decoder = msgspec.json.Decoder(ConfigOutcome)

#: A change waits for the agent (up to 30 s at the hub): the request waits longer.
CHANGE_TIMEOUT_S = 40.0


def _endpoint(url: str, agent: str, suffix: str = "") -> str:
    return f"{base_url(url)}/api/agents/{agent}/config{suffix}"


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
    return await get_decoded(
        _view_decoder,
        _endpoint(url, agent),
        timeout_s=timeout_s,
        token=token,
        ca_file=ca_file,
        pin_sha256=pin_sha256,
    )


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
    return decode_answer(_outcome_decoder, body, endpoint)


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
    return decode_answer(_outcome_decoder, body, endpoint)
