"""What can go wrong for a client, as exceptions::

KmzError
├── HubUnreachable       no connection to the hub at all (refused, no route, not a hub)
├── ConnectionLost       the connection ended while something waited on it
├── RequestTimeout       the hub did not answer a request in time (also a TimeoutError)
├── RequestError         the hub refused a request (subscribe, list, log) with a code
├── CommandError         a command came back with ok=false (from `protocol`)
└── ProtocolError        the hub sent something we cannot accept (from `protocol`)
    └── HandshakeError   ... in answer to our hello, e.g. `unsupported_protocol`

`HubUnreachable` and `ConnectionLost` are the transport's, shared with the
agent; each says in `healing` whether waiting can mend it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aiohttp

from ..protocol import KmzError
from ..transport import ConnectionLost, HubUnreachable, describe, unreachable

__all__ = ["ConnectionLost", "HubUnreachable", "RequestError", "RequestTimeout", "reaching"]


class RequestTimeout(KmzError, TimeoutError):
    """The hub did not answer a request before its deadline."""


class RequestError(KmzError):
    """The hub refused a request with an error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@contextlib.contextmanager
def reaching(url: str, timeout_s: float) -> Iterator[None]:
    """Turn a failure to reach the hub at `url` into a HubUnreachable that names it."""
    try:
        yield
    except TimeoutError:
        raise HubUnreachable(
            f"no answer from the hub at {url} within {timeout_s:g} s", url=url
        ) from None
    except (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch) as exc:
        raise unreachable(url, exc) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise HubUnreachable(f"cannot reach the hub at {url}: {describe(exc)}", url=url) from None
