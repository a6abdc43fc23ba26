"""Streamed answers of the hub's HTTP API (NDJSON, CSV): read as they arrive, never whole.

`streamed_get` opens a GET and yields the response once the hub answered
200; any other status becomes `RequestError` with the hub's code, a hub
that cannot be reached `HubUnreachable`. A stream cut before its end (the
hub failed midway, the connection dropped) raises `StreamCut` from the
reading, so a partial answer is never taken for a whole one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import aiohttp
import msgspec

from ..protocol import KmzError
from ..transport import Trust
from .credentials import token_for
from .errors import RequestError, reaching

#: How long a streamed answer may stay silent before it counts as lost.
READ_TIMEOUT_S = 60.0


class StreamCut(KmzError):
    """A streamed answer ended before the hub finished it."""


class _Problem(msgspec.Struct, frozen=True):
    code: str
    message: str


@contextlib.asynccontextmanager
async def streamed_get(
    endpoint: str,
    params: dict[str, str] | list[tuple[str, str]],
    *,
    token: str | None = None,
    connect_timeout_s: float = 10.0,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """The hub's 200 answer to GET `endpoint`, to read as it streams.

    `token` None: the one `credentials.token_for` finds for the hub; ``""``:
    none. `ca_file`, `pin_sha256`: which certificate an https:// hub may show
    (`transport.Trust`, as `http.request`).
    """
    trust = Trust.for_client(ca_file, pin_sha256)
    if token is None:
        token = token_for(endpoint.rsplit("/api/", 1)[0])
    headers = {"Authorization": f"Bearer {token}"} if token else None
    timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=READ_TIMEOUT_S)
    async with trust.session(timeout=timeout) as session:
        with reaching(endpoint, connect_timeout_s):
            response = await session.get(
                endpoint, params=params, headers=headers, ssl=trust.ssl_context()
            )
        try:
            if response.status != 200:
                body = await response.read()
                try:
                    problem = msgspec.json.decode(body, type=_Problem)
                except msgspec.DecodeError:
                    problem = _Problem(
                        f"http_{response.status}", body[:200].decode(errors="replace")
                    )
                raise RequestError(problem.code, problem.message)
            try:
                yield response
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                raise StreamCut(f"the answer from {endpoint} was cut short: {exc}") from None
            except TimeoutError:
                raise StreamCut(
                    f"the answer from {endpoint} stalled for {READ_TIMEOUT_S:g} s"
                ) from None
        finally:
            response.release()


#: The longest line a streamed answer may hold (a log entry is at most the
#: hub's largest message, 16 MiB, plus its fields).
MAX_LINE_BYTES = 32 << 20


async def lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The lines of a streamed answer without their newline, as they arrive."""
    pending = b""
    async for chunk in response.content.iter_any():
        pending += chunk
        if b"\n" not in chunk:
            if len(pending) > MAX_LINE_BYTES:
                raise StreamCut(f"a line of the answer is longer than {MAX_LINE_BYTES} bytes")
            continue
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line
    if pending:
        yield pending
