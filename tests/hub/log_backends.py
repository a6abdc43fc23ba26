"""Traffic logs on every backend for the storage tests: SQLite files and real PostgreSQL.

The PostgreSQL tests run against a real server: $KMZ_TEST_POSTGRES_URL, else
postgresql://postgres@127.0.0.1:5432/test (the development machines' server,
trust auth). If that server is installed (pg_ctlcluster) but stopped, it is
started. If none can be reached the tests fail, saying so: they are never
skipped. Each test gets a schema of its own, dropped afterwards.

Use `log_place` (every backend) or `sqlite_place` / `postgres_place`; test
modules import the fixtures they use from here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import os
import secrets
import shutil
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from kleinmaelzung.hub.store import LogBackend, LogWriter, SqliteBackend, redact_url
from kleinmaelzung.hub.store.postgres import PostgresBackend

POSTGRES_URL_ENV = "KMZ_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: How long a stopped local server may take to accept connections.
POSTGRES_START_S = 30.0

_T = TypeVar("_T")


def run_aside(make: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion on a loop of its own, in another thread.

    For sync fixtures: the test's own loop is not running yet, or is busy.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()  # type: ignore[arg-type]


async def _try_connect(url: str) -> str | None:
    """None if the server answers, else why not."""
    try:
        connection = await asyncpg.connect(url, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return str(exc) or type(exc).__name__
    await connection.close()
    return None


def _start_local_clusters() -> None:
    for config in glob.glob("/etc/postgresql/*/main"):
        version = Path(config).parent.name
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            capture_output=True,
            timeout=POSTGRES_START_S,
            check=False,
        )


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL server that answers; fails the test (never skips it) if there is none."""
    url = os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)
    why = run_aside(lambda: _try_connect(url))
    if why is not None and POSTGRES_URL_ENV not in os.environ and shutil.which("pg_ctlcluster"):
        _start_local_clusters()
        deadline = time.monotonic() + POSTGRES_START_S
        while why is not None and time.monotonic() < deadline:
            why = run_aside(lambda: _try_connect(url))
            if why is not None:
                time.sleep(0.2)  # polling a server that is starting: no event to wait for
    if why is not None:
        pytest.fail(
            f"the PostgreSQL traffic-log tests need a server; {redact_url(url)} gave: {why}.\n"
            f"Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start),"
            f" or set {POSTGRES_URL_ENV}=postgresql://user:password@host:port/database"
            " to use another (each test makes and drops a schema of its own there).",
            pytrace=False,
        )
    return url


@dataclass
class LogPlace:
    """Where one test's traffic log lives, on one backend, and how to get at it from outside."""

    kind: str
    #: The URL `store_for_url` takes for this log.
    url: str
    path: Path | None = None
    postgres_url: str | None = None
    schema: str | None = None

    def backend(self) -> LogBackend:
        """A new backend for this log (each store needs its own)."""
        if self.path is not None:
            return SqliteBackend(self.path)
        return PostgresBackend(self.url)

    def store(self, **options: Any) -> LogWriter:
        """A new, unopened store on this log."""
        return LogWriter(self.backend(), **options)

    async def sql(self, statement: str, *args: object) -> list[tuple[Any, ...]]:
        """Run one statement from outside the hub (``?`` or ``$1`` placeholders, by backend)."""
        if self.path is not None:
            with contextlib.closing(sqlite3.connect(self.path)) as connection, connection:
                return connection.execute(statement, args).fetchall()
        connection = await self._connect()
        try:
            return [tuple(row) for row in await connection.fetch(statement, *args)]
        finally:
            await connection.close()

    async def script(self, statements: str) -> None:
        """Run several statements from outside the hub (PostgreSQL)."""
        connection = await self._connect()
        try:
            await connection.execute(statements)
        finally:
            await connection.close()

    async def _connect(self) -> Any:
        assert self.postgres_url is not None
        return await asyncpg.connect(
            self.postgres_url, server_settings={"search_path": f'"{self.schema}"'}
        )

    @contextlib.asynccontextmanager
    async def writes_blocked(self) -> AsyncIterator[None]:
        """Another session holds the log's write lock until the block ends.

        SQLite: a transaction left open in the sqlite3 shell. PostgreSQL: a
        table lock; the writer's lock timeout turns its wait into a retry.
        """
        if self.path is not None:
            blocker = sqlite3.connect(self.path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            return
        connection = await self._connect()
        try:
            transaction = connection.transaction()
            await transaction.start()
            await connection.execute(
                "LOCK TABLE traffic, instrument_seq, known_instrument IN EXCLUSIVE MODE"
            )
            try:
                yield
            finally:
                await transaction.rollback()
        finally:
            await connection.close()


def _sqlite_place(tmp_path: Path) -> LogPlace:
    path = tmp_path / "traffic.sqlite3"
    return LogPlace("sqlite", "sqlite:///" + str(path).lstrip("/"), path=path)


@contextlib.contextmanager
def _postgres_place(postgres_url: str) -> Iterator[LogPlace]:
    schema = f"kmz_test_{secrets.token_hex(4)}"
    separator = "&" if "?" in postgres_url else "?"
    try:
        yield LogPlace(
            "postgresql",
            f"{postgres_url}{separator}schema={schema}",
            postgres_url=postgres_url,
            schema=schema,
        )
    finally:

        async def drop() -> None:
            connection = await asyncpg.connect(postgres_url, timeout=5)
            try:
                await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await connection.close()

        run_aside(drop)


@pytest.fixture
def sqlite_place(tmp_path: Path) -> LogPlace:
    """A traffic log in a SQLite file of this test."""
    return _sqlite_place(tmp_path)


@pytest.fixture
def postgres_place(postgres_url: str) -> Iterator[LogPlace]:
    """A traffic log in a PostgreSQL schema of this test, dropped afterwards."""
    with _postgres_place(postgres_url) as place:
        yield place


@pytest.fixture(params=["sqlite", "postgresql"])
def log_place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogPlace]:
    """A traffic log of this test, once on each backend."""
    if request.param == "sqlite":
        yield _sqlite_place(tmp_path)
        return
    with _postgres_place(request.getfixturevalue("postgres_url")) as place:
        yield place
