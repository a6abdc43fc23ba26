"""Requests to the hub's HTTP API: one place that maps its failures to the client's errors."""

from __future__ import annotations

import aiohttp
import msgspec

from .credentials import token_for
from .errors import RequestError, reaching


class _Problem(msgspec.Struct, frozen=True):
    code: str
    message: str


_problem_decoder = msgspec.json.Decoder(_Problem)


async def request(
    method: str,
    endpoint: str,
    *,
    params: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    token: str | None = None,
) -> bytes:
    """The body of a successful answer; `RequestError` with the hub's code otherwise.

    `token` None: the one `credentials.token_for` finds for the hub, if any;
    ``""``: none.
    """
    if token is None:
        token = token_for(endpoint.rsplit("/api/", 1)[0])
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with reaching(endpoint, timeout_s):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.request(method, endpoint, params=params, headers=headers) as response,
        ):
            status, body = response.status, await response.read()
    if status != 200:
        try:
            problem = _problem_decoder.decode(body)
        except msgspec.DecodeError:
            problem = _Problem(f"http_{status}", body[:200].decode(errors="replace"))
        raise RequestError(problem.code, problem.message)
    return body
