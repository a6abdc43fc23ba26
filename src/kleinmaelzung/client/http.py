"""Requests to the hub's HTTP API: one place that maps its failures to the client's errors."""

from __future__ import annotations

import os
from typing import TypeVar

import aiohttp
import msgspec

from ..protocol import ErrorCode, ProtocolError
from ..transport import Trust
from .credentials import token_for
from .errors import RequestError, reaching

T = TypeVar("T")


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
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
    json_body: bytes | None = None,
) -> bytes:
    """The body of a successful answer; `RequestError` with the hub's code otherwise.

    `json_body`: encoded JSON to send (a PUT or POST).

    `token` None: the one `credentials.token_for` finds for the hub, if any;
    ``""``: none. `ca_file`, `pin_sha256`: which certificate an https:// hub
    may show (`transport.Trust`); the token is sent only to that one.
    """
    trust = Trust.for_client(ca_file, pin_sha256)
    if token is None:
        token = token_for(endpoint.rsplit("/api/", 1)[0])
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if json_body is not None:
        headers["Content-Type"] = "application/json"
    with reaching(endpoint, timeout_s):
        async with (
            trust.session(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.request(
                method,
                endpoint,
                params=params,
                headers=headers,
                data=json_body,
                ssl=trust.ssl_context(),
            ) as response,
        ):
            status, body = response.status, await response.read()
    if status != 200:
        try:
            problem = _problem_decoder.decode(body)
        except msgspec.DecodeError:
            problem = _Problem(f"http_{status}", body[:200].decode(errors="replace"))
        raise RequestError(problem.code, problem.message)
    return body


async def get_decoded(
    decoder: msgspec.json.Decoder[T],
    endpoint: str,
    *,
    params: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> T:
    """`GET endpoint`, its answer decoded; `ProtocolError` naming the endpoint if it is not."""
    body = await request(
        "GET",
        endpoint,
        params=params,
        timeout_s=timeout_s,
        token=token,
        ca_file=ca_file,
        pin_sha256=pin_sha256,
    )
    return decode_answer(decoder, body, endpoint)


def decode_answer(decoder: msgspec.json.Decoder[T], body: bytes, endpoint: str) -> T:
    """An answer of `endpoint` decoded; `ProtocolError` naming the endpoint if it is not
    what this client expects (a hub of another version, or not a hub)."""
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:  # includes ValidationError
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"unexpected answer from {endpoint}: {exc}"
        ) from None
