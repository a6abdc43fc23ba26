"""The hub's HTTP API for people and tools: the traffic log (`GET /api/log`), forgetting.

Entries are `protocol.LogEntry`: each message is raw JSON, decoded further
with `LogEntry.decode_message`, `message_object` or `refusal`.
"""

from __future__ import annotations

import os

import msgspec

from ..protocol import AgentRecord, LogEntry, LogPage
from ..transport import base_url
from .http import decode_answer, request

# LogEntry is protocol's, re-exported here for `client` and its formatting.
__all__ = ["LogEntry", "fetch_agents", "fetch_log", "forget_instrument"]


_page_decoder = msgspec.json.Decoder(LogPage)
_agents_decoder = msgspec.json.Decoder(list[AgentRecord])


async def fetch_agents(
    url: str,
    *,
    timeout_s: float = 10.0,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> list[AgentRecord]:
    """The agents connected to the hub at `url`: spools, clocks, newest logged seqs."""
    endpoint = base_url(url) + "/api/agents"
    body = await request(
        "GET", endpoint, timeout_s=timeout_s, token=token, ca_file=ca_file, pin_sha256=pin_sha256
    )
    return decode_answer(_agents_decoder, body, endpoint)


async def fetch_log(
    url: str,
    *,
    instrument: str | None = None,
    limit: int = 20,
    kind: str | None = None,
    timeout_s: float = 10.0,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> list[LogEntry]:
    """The newest traffic-log entries from the hub at `url`, newest first.

    `kind`: a message type, ``command`` (commands and their replies) or
    ``refused`` (refused input: auth failures, limit breaches, bad frames).
    """
    endpoint = base_url(url) + "/api/log"
    params = {"limit": str(limit)}
    if instrument is not None:
        params["instrument"] = instrument
    if kind is not None:
        params["kind"] = kind
    body = await request(
        "GET",
        endpoint,
        params=params,
        timeout_s=timeout_s,
        token=token,
        ca_file=ca_file,
        pin_sha256=pin_sha256,
    )
    return decode_answer(_page_decoder, body, endpoint).entries


async def forget_instrument(
    url: str,
    instrument_id: str,
    *,
    timeout_s: float = 10.0,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> None:
    """Make the hub at `url` stop listing an instrument whose agent is gone.

    `RequestError` with `unknown_instrument`, or `instrument_online` while an
    agent serves it.
    """
    await request(
        "DELETE",
        f"{base_url(url)}/api/instruments/{instrument_id}",
        timeout_s=timeout_s,
        token=token,
        ca_file=ca_file,
        pin_sha256=pin_sha256,
    )
