"""Certificates made with the openssl CLI for a test: a lab CA, a hub certificate for 127.0.0.1."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from kleinmaelzung.transport import certificate_sha256


@dataclass(frozen=True)
class Certificates:
    """A CA, a hub certificate it signed (127.0.0.1, localhost) and its key, and a second CA."""

    ca: Path
    cert: Path
    key: Path
    #: A CA that signed nothing here: trusting it alone must not admit the hub.
    other_ca: Path

    @property
    def pin(self) -> str:
        """The hub certificate's SHA-256, as openssl prints it."""
        return certificate_sha256(self.cert.read_text())


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(folder: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip


def make_certificates(folder: Path) -> Certificates:
    """Write a lab CA, a second CA, and a hub certificate for 127.0.0.1 signed by the first."""
    folder.mkdir(parents=True, exist_ok=True)
    _make_ca(folder, "lab-ca")
    _make_ca(folder, "other-ca")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "hub.key", "-out", "hub.csr", "-subj", "/CN=127.0.0.1",
        cwd=folder,
    )  # fmt: skip
    (folder / "hub.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth\n"
        "basicConstraints=CA:FALSE\n"
    )
    _openssl(
        "x509", "-req", "-in", "hub.csr", "-CA", "lab-ca.crt", "-CAkey", "lab-ca.key",
        "-CAcreateserial", "-out", "hub.crt", "-days", "2", "-extfile", "hub.ext",
        cwd=folder,
    )  # fmt: skip
    return Certificates(
        ca=folder / "lab-ca.crt",
        cert=folder / "hub.crt",
        key=folder / "hub.key",
        other_ca=folder / "other-ca.crt",
    )
