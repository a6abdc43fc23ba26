"""What can go wrong on a link to the hub, as exceptions, each saying whether waiting mends it::

    KmzError
    ├── HubUnreachable      no connection: refused, no route, unknown host, timeout, not a hub
    ├── ConnectionLost      the connection ended (before the welcome, or while in use)
    └── ProtocolError       (protocol)
        └── HandshakeError  (protocol)
            └── HandshakeFailed  the hub refused our hello, closed instead, or never welcomed it

Each carries `healing` (`Healing`): a reconnecting peer retries a TRANSIENT
failure soon, a PERMANENT one slowly (an operator must act), and stops at a
FINAL one. Foreign exceptions (aiohttp, OSError) are mapped here, where the
transport catches them; their text is never left empty.
"""

from __future__ import annotations

import enum
import socket

import aiohttp

from ..protocol import CloseCode, ErrorCode, HandshakeError, KmzError


class Healing(enum.Enum):
    """Whether a failure to reach or keep the hub can mend by itself."""

    #: The hub is down or restarting, the network or DNS is away, a timeout:
    #: retry soon, with backoff.
    TRANSIENT = "transient"
    #: Wrong path, not a hub, refused credentials, unsupported protocol: an
    #: operator must act. Retry at the slowest pace, so the fix is picked up.
    PERMANENT = "permanent"
    #: Another connection took this agent's id (close code 4003): retrying
    #: would take it back, and the two would replace each other forever. Stop.
    FINAL = "final"


class HubUnreachable(KmzError):
    """No connection to the hub; the message names the URL and says why in words."""

    def __init__(self, message: str, *, url: str = "", healing: Healing = Healing.TRANSIENT):
        super().__init__(message)
        self.url = url
        self.healing = healing


class ConnectionLost(KmzError):
    """The connection to the hub ended: before its welcome, or while something waited on it."""

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        close_code: int | None = None,
        close_reason: str = "",
        healing: Healing = Healing.TRANSIENT,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.close_code = close_code
        self.close_reason = close_reason
        self.healing = healing


class HandshakeFailed(HandshakeError):
    """The hub refused our hello (`code`, `message`: its own words), closed, or never welcomed."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        close_code: int,
        *,
        url: str = "",
        healing: Healing = Healing.PERMANENT,
    ) -> None:
        super().__init__(code, message, _as_close_code(close_code))
        self.url = url
        self.healing = healing

    def __str__(self) -> str:
        if self.code is ErrorCode.HELLO_EXPECTED and self.close_code is CloseCode.HANDSHAKE_TIMEOUT:
            return self.message  # no welcome in time: nothing was refused
        return (
            f"the hub at {self.url} refused the hello: {self.code}: {self.message} "
            f"({close_in_words(self.close_code)})"
        )


def _as_close_code(code: int) -> CloseCode:
    try:
        return CloseCode(code)
    except ValueError:
        # A standard code (1000-1015) after a refusal: the refusal is what counts.
        return CloseCode.HELLO_EXPECTED


#: The close codes whose cause waiting cannot mend; anything else is transient.
_CLOSE_HEALING: dict[int, Healing] = {
    CloseCode.HELLO_EXPECTED: Healing.PERMANENT,
    CloseCode.UNAUTHORIZED: Healing.PERMANENT,
    CloseCode.UNSUPPORTED_PROTOCOL: Healing.PERMANENT,
    CloseCode.DUPLICATE_AGENT: Healing.FINAL,
}

_CLOSE_WORDS: dict[int, str] = {
    1000: "closed normally",
    CloseCode.GOING_AWAY: "the hub is going away (stopping or restarting)",
    1006: "closed without a close frame (the hub's process or the network went away)",
    1009: "a message was too big",
    1011: "the hub failed",
    CloseCode.HELLO_EXPECTED: "the hub could not read our hello",
    CloseCode.UNAUTHORIZED: "the hub refused the credentials: check the token",
    CloseCode.UNSUPPORTED_PROTOCOL: (
        "the hub does not speak our protocol version: upgrade kleinmaelzung here or on the hub"
    ),
    CloseCode.DUPLICATE_AGENT: "another connection with this agent id took its place",
    CloseCode.HANDSHAKE_TIMEOUT: "our hello was too slow",
    CloseCode.SLOW_CONSUMER: "we read too slowly and the hub dropped us",
}

_CLOSE_ERROR_CODE: dict[int, ErrorCode] = {
    CloseCode.HELLO_EXPECTED: ErrorCode.HELLO_EXPECTED,
    CloseCode.UNAUTHORIZED: ErrorCode.UNAUTHORIZED,
    CloseCode.UNSUPPORTED_PROTOCOL: ErrorCode.UNSUPPORTED_PROTOCOL,
    CloseCode.DUPLICATE_AGENT: ErrorCode.DUPLICATE_AGENT,
    CloseCode.HANDSHAKE_TIMEOUT: ErrorCode.HELLO_EXPECTED,
}


def close_healing(close_code: int | None) -> Healing:
    """Whether reconnecting can help after the hub closed with `close_code`."""
    return _CLOSE_HEALING.get(close_code or 0, Healing.TRANSIENT)


def close_in_words(close_code: int | None, reason: str = "") -> str:
    """`close code 4003 (another connection ...): reason`, for logs and exceptions."""
    if close_code is None:
        return "no close code"
    words = _CLOSE_WORDS.get(close_code)
    text = f"close code {close_code}" + (f" ({words})" if words else "")
    return f"{text}: {reason}" if reason else text


def close_error_code(close_code: int | None) -> ErrorCode | None:
    """The error code a hub's close during the handshake stands for, if any."""
    return _CLOSE_ERROR_CODE.get(close_code or 0)


def describe(exc: BaseException) -> str:
    """An exception in words; its type's name when its text is empty (`TimeoutError()`)."""
    text = str(exc).strip()
    return text or type(exc).__name__


def unreachable(url: str, exc: BaseException) -> HubUnreachable:
    """Map a failure to open a WebSocket to `url` to a HubUnreachable that says why."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return _not_upgraded(url, exc)
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(
        getattr(exc, "os_error", None), socket.gaierror
    ):
        host = getattr(exc, "host", "") or url
        return HubUnreachable(
            f"cannot reach the hub at {url}: the host name {host!r} does not resolve "
            f"({describe(exc)})",
            url=url,
        )
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return HubUnreachable(
            f"refusing the hub at {url}: its certificate is not the pinned one (SHA-256 "
            f"{_colons(exc.got)}, pinned {_colons(exc.expected)}); nothing was sent. If the "
            "hub's certificate was renewed, pin the new one",
            url=url,
            healing=Healing.PERMANENT,
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return HubUnreachable(
            f"refusing the hub at {url}: its certificate is not trusted "
            f"({_verify_message(exc.certificate_error)}); nothing was sent. Give the CA that "
            "signed it (kmz --ca FILE, an agent's `ca_file`, Client(ca_file=...))",
            url=url,
            healing=Healing.PERMANENT,
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return HubUnreachable(
            f"cannot reach the hub at {url}: TLS failed ({describe(exc)}); check the "
            "certificate, or use http:// for a hub without TLS",
            url=url,
            healing=Healing.PERMANENT,
        )
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(
        exc.os_error, ConnectionRefusedError
    ):
        return HubUnreachable(
            f"cannot reach the hub at {url}: connection refused (nothing listens on "
            f"{exc.host}:{exc.port}; is the hub running?)",
            url=url,
        )
    if isinstance(exc, aiohttp.InvalidURL):
        return HubUnreachable(
            f"cannot reach the hub at {url}: not a valid URL", url=url, healing=Healing.PERMANENT
        )
    return HubUnreachable(f"cannot reach the hub at {url}: {describe(exc)}", url=url)


def _not_upgraded(url: str, exc: aiohttp.WSServerHandshakeError) -> HubUnreachable:
    status = exc.status
    if status == 404:
        why = (
            f"nothing at that path (HTTP 404): the URL's path is wrong; give the hub's "
            f"address, such as http://{_host_of(url)}"
        )
    elif status in (401, 403):
        why = f"the server refused us (HTTP {status}): check the credentials or the proxy"
    elif status >= 500:
        # A proxy in front of a hub that is restarting answers 502 or 503.
        return HubUnreachable(
            f"cannot reach the hub at {url}: the server answered HTTP {status} "
            "(a proxy whose hub is down or restarting?)",
            url=url,
        )
    else:
        why = (
            f"not a WebSocket endpoint (HTTP {status}, {exc.message.lower()}): is this "
            "the address of a kmz hub?"
        )
    return HubUnreachable(
        f"cannot reach the hub at {url}: {why}", url=url, healing=Healing.PERMANENT
    )


def _verify_message(error: Exception) -> str:
    # "self-signed certificate in certificate chain", without OpenSSL's prefix and line.
    return str(getattr(error, "verify_message", "") or describe(error))


def _colons(digest: bytes) -> str:
    text = digest.hex().upper()
    return ":".join(text[i : i + 2] for i in range(0, len(text), 2))


def _host_of(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0]
