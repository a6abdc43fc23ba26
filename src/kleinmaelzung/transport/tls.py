"""How an agent or a client trusts the hub's certificate on https:// and wss:// URLs.

By default the system's certificate authorities vouch for the hub, and the
certificate must name the host in the URL. A lab CA (`ca_file`) replaces
them: only certificates it signed are trusted, as `curl --cacert` does. A pin
(`pin_sha256`, the SHA-256 of the hub's certificate as
`openssl x509 -noout -fingerprint -sha256` prints it) is checked on top of
that: a certificate that is valid but not this one is refused, before the
hello (and its token) is sent.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ..protocol import KmzError

_HEX = re.compile(r"[0-9a-f]{64}")


class TrustError(KmzError):
    """A CA file or a pin that cannot be used; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Trust:
    """Which hub certificates to accept: signed by `ca_file` (else the system's CAs), and,
    if `pin_sha256` is set, exactly that certificate."""

    ca_file: Path | None = None
    #: 64 lower-case hex digits (see `parse_pin` for what users may write).
    pin_sha256: str | None = None

    @classmethod
    def of(
        cls, ca_file: str | os.PathLike[str] | None = None, pin_sha256: str | None = None
    ) -> Trust:
        """Check `ca_file` is readable and `pin_sha256` well formed; raise `TrustError`."""
        trust = cls(
            ca_file=Path(ca_file).expanduser() if ca_file else None,
            pin_sha256=parse_pin(pin_sha256) if pin_sha256 else None,
        )
        trust.ssl_context()  # reads the CA file now, so a bad one is named at once
        return trust

    @classmethod
    def for_client(
        cls, ca_file: str | os.PathLike[str] | None = None, pin_sha256: str | None = None
    ) -> Trust:
        """`of`, with `$KMZ_CA` and `$KMZ_PIN` for what is not given (as `$KMZ_TOKEN` is)."""
        return cls.of(
            ca_file if ca_file is not None else os.environ.get("KMZ_CA") or None,
            pin_sha256 if pin_sha256 is not None else os.environ.get("KMZ_PIN") or None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the chain and the host name, TLS 1.2 or newer."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except FileNotFoundError:
            raise TrustError(f"CA file {self.ca_file}: no such file") from None
        except PermissionError:
            raise TrustError(f"CA file {self.ca_file}: permission denied") from None
        except (ssl.SSLError, OSError) as exc:
            raise TrustError(
                f"CA file {self.ca_file}: not a PEM certificate file ({exc.strerror or exc})"
            ) from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def fingerprint(self) -> aiohttp.Fingerprint | None:
        """aiohttp's check of the pin, or None without one."""
        return aiohttp.Fingerprint(bytes.fromhex(self.pin_sha256)) if self.pin_sha256 else None

    def session(self, timeout: aiohttp.ClientTimeout | None = None) -> aiohttp.ClientSession:
        """A client session that checks the pin on every connection it opens.

        Requests must pass `ssl=self.ssl_context()`: aiohttp then verifies
        the chain with that context and the pin with the connector's
        `Fingerprint` (with the pin alone it would skip verification).
        """
        fingerprint = self.fingerprint()
        connector = aiohttp.TCPConnector(ssl=fingerprint) if fingerprint is not None else None
        if timeout is None:
            return aiohttp.ClientSession(connector=connector)
        return aiohttp.ClientSession(connector=connector, timeout=timeout)


def parse_pin(text: str) -> str:
    """A certificate's SHA-256 as 64 lower-case hex digits, from what a user may write:
    ``AB:CD:...`` (openssl), plain hex, with or without a ``sha256:`` prefix."""
    pin = text.strip().lower()
    for prefix in ("sha256:", "sha256//", "sha256="):
        pin = pin.removeprefix(prefix)
    pin = pin.replace(":", "").replace(" ", "")
    if not _HEX.fullmatch(pin):
        raise TrustError(
            f"certificate pin {text!r} is not a SHA-256 fingerprint: expected 64 hex digits, "
            "as `openssl x509 -noout -fingerprint -sha256 -in hub.crt` prints them"
        )
    return pin


def certificate_sha256(pem: str) -> str:
    """The SHA-256 of the first certificate in `pem`, as openssl prints it (``AB:CD:...``)."""
    end = "-----END CERTIFICATE-----"
    start = pem.index("-----BEGIN CERTIFICATE-----")
    der = ssl.PEM_cert_to_DER_cert(pem[start : pem.index(end, start) + len(end)])
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
