"""Instrument metadata held at the hub, for admins' tools: `kmz instrument-meta get|set`."""

from __future__ import annotations

import os

import msgspec

from ..protocol import InstrumentMetadata, MetadataView
from ..transport import base_url
from .http import decode_answer, get_decoded, request


def _endpoint(url: str, instrument: str) -> str:
    return f"{base_url(url)}/api/instruments/{instrument}/metadata"


_view_decoder = msgspec.json.Decoder(MetadataView)


async def get_instrument_metadata(
    url: str,
    instrument: str,
    *,
    timeout_s: float = 10.0,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> MetadataView:
    """What the hub at `url` holds of `instrument`: location, group, owner... (admin)."""
    return await get_decoded(
        _view_decoder,
        _endpoint(url, instrument),
        timeout_s=timeout_s,
        token=token,
        ca_file=ca_file,
        pin_sha256=pin_sha256,
    )


async def set_instrument_metadata(
    url: str,
    instrument: str,
    metadata: InstrumentMetadata,
    *,
    timeout_s: float = 10.0,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> MetadataView:
    """Replace `instrument`'s metadata at the hub (admin); what it holds afterwards."""
    endpoint = _endpoint(url, instrument)
    body = await request(
        "PUT",
        endpoint,
        timeout_s=timeout_s,
        token=token,
        ca_file=ca_file,
        pin_sha256=pin_sha256,
        json_body=msgspec.json.encode(metadata),
    )
    return decode_answer(_view_decoder, body, endpoint)
