"""What the hub's traffic log holds (``GET /api/log/stats``): rows, sizes, oldest entry per kind."""

from __future__ import annotations

import os

import msgspec

from ..transport import base_url
from .http import decode_answer, request


class KindStats(msgspec.Struct, frozen=True, kw_only=True):
    """One kind of log entry: ``samples``, ``wire``, ``commands``, ``audit``, ``calibration``."""

    kind: str
    rows: int
    #: Bytes of the logged messages (values for samples), without indexes.
    bytes: int
    #: Hub time of the oldest entry; None if there is none.
    oldest: float | None
    #: Days the hub keeps it; 0 for forever.
    retention_days: float


class LogStats(msgspec.Struct, frozen=True, kw_only=True):
    """The traffic log's sizes per kind, and the newest pruning pass (None before the first)."""

    backend: str
    total_bytes: int
    kinds: list[KindStats]
    instrument_seqs: int
    writer_positions: int
    last_pass: dict[str, object] | None = None


_decoder = msgspec.json.Decoder(LogStats)


async def fetch_log_stats(
    url: str,
    *,
    timeout_s: float = 60.0,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> LogStats:
    """The log's statistics (admin); counting reads the whole log, hence the long timeout."""
    endpoint = base_url(url) + "/api/log/stats"
    body = await request(
        "GET", endpoint, timeout_s=timeout_s, token=token, ca_file=ca_file, pin_sha256=pin_sha256
    )
    return decode_answer(_decoder, body, endpoint)
