"""Choosing the traffic log's backend from a URL (`kmz hub --log URL`).

``sqlite:///abs/path.sqlite3`` or ``sqlite:relative/path.sqlite3`` for a
SQLite file; ``postgresql://user[:password]@host[:port]/db[?schema=NAME]``
for PostgreSQL (``postgres://`` too), which needs the ``postgres`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from .backend import LogBackend
from .base import StoreError
from .writer import DEGRADED_AFTER_S, LogWriter

if TYPE_CHECKING:
    from .process import ProcessWriter

SQLITE_SCHEMES = ("sqlite",)
POSTGRES_SCHEMES = ("postgresql", "postgres")


class LogUrlError(StoreError):
    """A traffic-log URL this hub cannot use: the message says why and what would do."""


def redact_url(url: str) -> str:
    """The URL without a password, in its user part or its query: safe to show and log."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            user = user.partition(":")[0]
            netloc = f"{user}@{host}" if user else host
        query = parse_qsl(parts.query, keep_blank_values=True)
        if any(key == "password" for key, _ in query):
            parts = parts._replace(query=urlencode([(k, v) for k, v in query if k != "password"]))
        elif netloc == parts.netloc:
            return url  # nothing to hide: as given
        # Rebuilt by hand: urlunsplit drops the // before an empty host.
        shown = f"{parts.scheme}://{netloc}{parts.path}"
        return shown + (f"?{parts.query}" if parts.query else "")
    except ValueError:  # not a URL at all (a bad port, say): show none of it
        return "(unreadable URL)"


def sqlite_url(path: Path) -> str:
    """The URL of a SQLite file."""
    return "sqlite:///" + str(path.absolute()).lstrip("/")


def backend_for_url(url: str) -> LogBackend:
    """A (not yet opened) backend for `url`; `LogUrlError` if it names none this hub has."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise LogUrlError(f"traffic log URL {redact_url(url)}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme in SQLITE_SCHEMES:
        if parts.netloc or not parts.path:
            raise LogUrlError(
                f"traffic log URL {url}: a SQLite log is a file, such as"
                " sqlite:///var/lib/kmz/traffic.sqlite3 (absolute) or sqlite:traffic.sqlite3"
            )
        from .sqlite import SqliteBackend

        return SqliteBackend(Path(unquote(parts.path)))
    if scheme in POSTGRES_SCHEMES:
        try:
            from .postgres import PostgresBackend
        except ImportError as exc:
            raise LogUrlError(
                f"traffic log {redact_url(url)} needs asyncpg ({exc}):"
                " pip install 'kleinmaelzung[postgres]'"
            ) from None
        return PostgresBackend(url)
    what = f"unknown scheme {parts.scheme!r}" if parts.scheme else "no scheme"
    raise LogUrlError(
        f"traffic log URL {redact_url(url)}: {what}; use sqlite:///path/to/traffic.sqlite3"
        " or postgresql://user@host/database"
    )


def store_for_url(
    url: str, *, writer_process: bool = False, degraded_after_s: float = DEGRADED_AFTER_S
) -> LogWriter | ProcessWriter:
    """A (not yet opened) traffic log for `url`; `LogUrlError` if it names none this hub has.

    With `writer_process`, the log is written by a process of its own
    (`process.ProcessWriter`); otherwise by a thread of the hub's.
    `degraded_after_s`: how long writes may fail, or the backlog stay over
    high water, before the log is degraded.
    """
    backend = backend_for_url(url)
    if writer_process:
        from .process import ProcessWriter

        return ProcessWriter(url, backend, degraded_after_s=degraded_after_s)
    from .sqlite import SqliteBackend, SqliteStore

    if isinstance(backend, SqliteBackend):
        return SqliteStore(backend.path, degraded_after_s=degraded_after_s)
    from .postgres import PostgresStore

    return PostgresStore(url, degraded_after_s=degraded_after_s)
