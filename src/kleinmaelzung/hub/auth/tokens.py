"""Tokens: how they are made, what is stored of them, and how one is checked.

A token is ``kmz_<id>_<secret>``: `id` is 12 hex digits, public (it names the
token in `kmz token list` and in the log); `secret` is 32 random bytes from
`secrets`, URL-safe base64. The plaintext is shown once, when it is made; the
hub stores only HMAC-SHA256(key, secret), with a 32-byte key of its own kept
in a separate file readable only by the hub's user (`credentials.key`).

Why a keyed hash and not scrypt: a token carries 256 random bits, so no
offline guessing can find one from its hash, memory-hard or not; what a slow
hash would add is ~50 ms of CPU per handshake, which turns a flood of bad
tokens into a denial of service. The key means a copy of the database alone
(a backup, a support bundle) does not even let anyone test a guess. Human
passwords, which are guessable, would need scrypt; this hub has none.
Checking compares digests in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "kmz_"
#: The token's public part and its secret: ``kmz_`` + 12 hex + ``_`` + 43 base64url.
_TOKEN = re.compile(r"^kmz_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token just made: `plaintext` is shown once, `digest` is what is stored."""

    id: str
    plaintext: str
    digest: str


def make_token(key: bytes) -> NewToken:
    """A fresh random token and the digest to store for it."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewToken(token_id, f"{PREFIX}{token_id}_{secret}", digest(key, secret))


def digest(key: bytes, secret: str) -> str:
    """The stored form of a token's secret: HMAC-SHA256 under the hub's key, hex."""
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """The (id, secret) of a well-formed token, or None."""
    match = _TOKEN.match(token)
    return (match[1], match[2]) if match else None


def verify(key: bytes, secret: str, stored: str) -> bool:
    """Whether `secret` is the one whose digest is `stored` (constant time)."""
    return hmac.compare_digest(digest(key, secret), stored)


def new_key() -> bytes:
    """A fresh key for the token digests."""
    return secrets.token_bytes(KEY_BYTES)
