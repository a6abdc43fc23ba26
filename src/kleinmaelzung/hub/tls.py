"""The hub's side of TLS: the server context from a certificate and key (`kmz hub --tls-cert`).

The handshake itself runs after admission (`hub.admission`): a connection
is counted, and refused over a cap, before it costs a TLS handshake, and a
handshake that does not finish within `Timeouts.handshake_s` is cut, so
sockets that never complete one cannot hold file descriptors.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from .errors import HubStartError


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context; `HubStartError` naming the file that cannot be used."""
    for what, path in (("certificate", cert_file), ("key", key_file)):
        if not path.is_file():
            raise HubStartError(f"TLS {what} {path}: no such file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except PermissionError as exc:
        raise HubStartError(f"TLS files: permission denied reading {exc.filename}") from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            why = f"the key {key_file} does not belong to the certificate {cert_file}"
        else:
            why = (
                f"cannot load the certificate {cert_file} with the key {key_file}: expected PEM "
                f"files, an unencrypted key ({exc.reason or exc})"
            )
        raise HubStartError(f"TLS: {why}") from None
    return context


def check_tls_pair(cert_file: Path | None, key_file: Path | None) -> None:
    """Both or neither: `HubStartError` for a certificate without its key or a key alone."""
    if (cert_file is None) != (key_file is None):
        missing = "tls_key (--tls-key)" if key_file is None else "tls_cert (--tls-cert)"
        raise HubStartError(f"TLS needs a certificate and its key: {missing} is not set")
