"""Timelines (``GET /api/timeline``): when an instrument or agent was online, offline or faulted."""

from __future__ import annotations

import os
from urllib.parse import quote

import msgspec

from ..transport import base_url
from .http import get_decoded


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """From `ts` (hub time) on, `state`, because of `cause` ("port vanished", "agent lost", ...)."""

    ts: float
    state: str
    cause: str
    reason: str = ""
    agent: str | None = None


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
    """An instrument's or agent's changes of state: the one at `since` first."""

    kind: str
    id: str
    since: float | None
    until: float | None
    changes: list[Change]


_decoder = msgspec.json.Decoder(Timeline)


async def fetch_timeline(
    url: str,
    instrument: str | None = None,
    *,
    agent: str | None = None,
    since: float | None = None,
    until: float | None = None,
    timeout_s: float = 30.0,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> Timeline:
    """The timeline of `instrument`, or of `agent`, within ``since <= ts < until``."""
    endpoint = base_url(url) + "/api/timeline"
    params: dict[str, str] = {}
    if instrument is not None:
        endpoint += "/" + quote(instrument, safe="")
    elif agent is not None:
        params["agent"] = agent
    if since is not None:
        params["since"] = repr(since)
    if until is not None:
        params["until"] = repr(until)
    return await get_decoded(
        _decoder,
        endpoint,
        params=params,
        timeout_s=timeout_s,
        token=token,
        ca_file=ca_file,
        pin_sha256=pin_sha256,
    )
