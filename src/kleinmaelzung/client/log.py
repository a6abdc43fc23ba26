"""The hub's traffic log, read over its HTTP API (`GET /api/log`).

Entries are `protocol.LogEntry`: each message is raw JSON, decoded further
with `LogEntry.decode_message`, `message_object` or `refusal`.
"""

from __future__ import annotations

import aiohttp
import msgspec

from ..protocol import ErrorCode, LogEntry, LogPage, ProtocolError
from ..transport import base_url
from .errors import RequestError, reaching

# LogEntry is protocol's, re-exported here for `client` and its formatting.
__all__ = ["LogEntry", "fetch_log"]


class _Problem(msgspec.Struct, frozen=True):
    code: str
    message: str


_page_decoder = msgspec.json.Decoder(LogPage)
_problem_decoder = msgspec.json.Decoder(_Problem)


async def fetch_log(
    url: str, *, instrument: str | None = None, limit: int = 20, timeout_s: float = 10.0
) -> list[LogEntry]:
    """The newest traffic-log entries from the hub at `url`, newest first."""
    endpoint = base_url(url) + "/api/log"
    params = {"limit": str(limit)}
    if instrument is not None:
        params["instrument"] = instrument
    with reaching(endpoint, timeout_s):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(endpoint, params=params) as response,
        ):
            status, body = response.status, await response.read()
    if status != 200:
        try:
            problem = _problem_decoder.decode(body)
        except msgspec.DecodeError:
            problem = _Problem(f"http_{status}", body[:200].decode(errors="replace"))
        raise RequestError(problem.code, problem.message)
    try:
        return _page_decoder.decode(body).entries
    except msgspec.DecodeError as exc:  # includes ValidationError: a hub of another version
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"unexpected answer from {endpoint}: {exc}"
        ) from None
