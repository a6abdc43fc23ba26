"""The credentials store: users, their grants, and tokens (as digests only).

A small SQLite file of its own, ``credentials.sqlite3`` in the hub's data
folder, beside the key of the token digests (``credentials.key``, mode 0600):
not in the traffic log, whose backend may be a shared PostgreSQL server and
whose rows are read by every `kmz log`. Its mere existence switches a hub to
requiring tokens (see `service`). The hub only reads it; `kmz user` and
`kmz token` write it, on the hub's machine, as the hub's OS user: that account
is the administrator. The hub notices each commit by another process through
``PRAGMA data_version`` (polled, see `service.Authenticator.watch`).

Everything the hub needs is in one `Snapshot`, loaded whole: a lab has tens
of users and tokens, not millions. The `CredentialStore` protocol is what the
hub uses, so the store can move to another engine later.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import HubError
from .permissions import ANY, PERSON_ROLES, Principal, Role
from .tokens import make_token, new_key, split_token, verify

DB_NAME = "credentials.sqlite3"
#: Why a well-formed token is refused when the store knows no such token.
UNKNOWN_TOKEN = "unknown token"
KEY_NAME = "credentials.key"

SCHEMA = """
CREATE TABLE IF NOT EXISTS user (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    instruments TEXT NOT NULL,   -- JSON list of id patterns
    commands TEXT NOT NULL,      -- JSON list of command names
    disabled REAL,               -- when it was disabled; NULL while active
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS token (
    id TEXT PRIMARY KEY,         -- the public part of the token
    user TEXT REFERENCES user (name),  -- a person's token; NULL for an agent's
    agent TEXT,                  -- an agent token's agent id
    instruments TEXT,            -- an agent token's instrument patterns (JSON)
    digest TEXT NOT NULL,        -- HMAC-SHA256(key, secret); never the token
    label TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    expires REAL,                -- NULL: never
    revoked REAL                 -- NULL: valid
);
"""


class CredentialsError(HubError):
    """The credentials store cannot do what was asked; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    """A person or script with a role and a grant."""

    name: str
    role: Role
    instruments: tuple[str, ...] = (ANY,)
    commands: tuple[str, ...] = (ANY,)
    disabled: float | None = None
    created: float = 0.0


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What is stored of a token: never the token itself."""

    id: str
    digest: str
    user: str | None = None
    agent: str | None = None
    instruments: tuple[str, ...] = ()
    label: str = ""
    created: float = 0.0
    expires: float | None = None
    revoked: float | None = None

    @property
    def owner(self) -> str:
        """Who the token is for, as listed."""
        return self.user if self.user is not None else f"agent:{self.agent}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every user and token, at one moment; `resolve` turns a token into a principal."""

    key: bytes
    users: dict[str, User] = field(default_factory=dict)
    tokens: dict[str, TokenRecord] = field(default_factory=dict)

    def authenticate(self, token: str, now: float) -> Principal | str:
        """The principal a presented token stands for, or why it is refused."""
        parts = split_token(token)
        if parts is None:
            return "not a kmz token"
        token_id, secret = parts
        record = self.tokens.get(token_id)
        if record is None or not verify(self.key, secret, record.digest):
            return UNKNOWN_TOKEN
        return self.principal(token_id, now)

    def principal(self, token_id: str, now: float) -> Principal | str:
        """The principal of a token already verified, as it stands now, or why it no longer may."""
        record = self.tokens.get(token_id)
        if record is None:
            return "the token was deleted"
        if record.revoked is not None:
            return f"token {token_id} was revoked"
        if record.expires is not None and record.expires <= now:
            return f"token {token_id} has expired"
        if record.agent is not None:
            return Principal(
                name=f"agent:{record.agent}",
                role=Role.AGENT,
                instruments=record.instruments,
                commands=(),
                token_id=token_id,
                agent_id=record.agent,
            )
        user = self.users.get(record.user or "")
        if user is None:
            return f"user {record.user!r} does not exist"
        if user.disabled is not None:
            return f"user {user.name!r} is disabled"
        return Principal(
            name=user.name,
            role=user.role,
            instruments=user.instruments,
            commands=user.commands,
            token_id=token_id,
        )


class CredentialStore(Protocol):
    """What the hub needs of its credentials, whatever keeps them."""

    def exists(self) -> bool:
        """Whether credentials were ever set up here (then the hub requires them)."""

    def load(self) -> Snapshot:
        """Everything, now."""

    def changed(self) -> bool:
        """Whether anything was committed since the last `load` or `changed` (cheap)."""

    def close(self) -> None:
        """Release the store."""


class SqliteCredentials:
    """Credentials in ``credentials.sqlite3`` of a data folder, the key beside it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / DB_NAME
        self.key_path = data_dir / KEY_NAME
        self._db: sqlite3.Connection | None = None
        self._version: int | None = None

    def exists(self) -> bool:
        """Whether the store was created (by `kmz user add`, `kmz token create`, `kmz demo`)."""
        return self.path.exists()

    # --- reading (the hub) ------------------------------------------------------

    def load(self) -> Snapshot:
        """Every user and token, and the key."""
        db = self._connect(create=False)
        key = self._read_key()
        users = {
            row[0]: User(
                name=row[0],
                role=Role(row[1]),
                instruments=tuple(json.loads(row[2])),
                commands=tuple(json.loads(row[3])),
                disabled=row[4],
                created=row[5],
            )
            for row in db.execute(
                "SELECT name, role, instruments, commands, disabled, created FROM user"
            )
        }
        tokens = {
            row[0]: TokenRecord(
                id=row[0],
                user=row[1],
                agent=row[2],
                instruments=tuple(json.loads(row[3])) if row[3] else (),
                digest=row[4],
                label=row[5],
                created=row[6],
                expires=row[7],
                revoked=row[8],
            )
            for row in db.execute(
                "SELECT id, user, agent, instruments, digest, label, created, expires, revoked "
                "FROM token"
            )
        }
        self._version = self._data_version(db)
        return Snapshot(key=key, users=users, tokens=tokens)

    def changed(self) -> bool:
        """Whether another connection committed since the last look."""
        db = self._connect(create=False)
        version = self._data_version(db)
        if version == self._version:
            return False
        self._version = version
        return True

    def close(self) -> None:
        """Close the database connection."""
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- writing (kmz user, kmz token, kmz demo) ----------------------------------

    def add_user(
        self,
        name: str,
        role: Role,
        instruments: tuple[str, ...] = (ANY,),
        commands: tuple[str, ...] = (ANY,),
    ) -> User:
        """Add a person or script; `CredentialsError` if the name is taken."""
        _check_person_role(role)
        user = User(name, role, instruments, commands, None, time.time())
        db = self._connect(create=True)
        try:
            with db:
                db.execute(
                    "INSERT INTO user (name, role, instruments, commands, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (name, role, json.dumps(instruments), json.dumps(commands), user.created),
                )
        except sqlite3.IntegrityError:
            raise CredentialsError(f"user {name!r} exists already") from None
        return user

    def set_user(
        self,
        name: str,
        *,
        role: Role | None = None,
        instruments: tuple[str, ...] | None = None,
        commands: tuple[str, ...] | None = None,
        enabled: bool | None = None,
    ) -> User:
        """Change a user's role, grant or state; takes effect on open connections within 1 s."""
        current = self._user(name)
        if role is not None:
            _check_person_role(role)
        disabled = current.disabled
        if enabled is not None:
            disabled = None if enabled else (disabled or time.time())
        user = User(
            name,
            role or current.role,
            current.instruments if instruments is None else instruments,
            current.commands if commands is None else commands,
            disabled,
            current.created,
        )
        db = self._connect(create=True)
        with db:
            db.execute(
                "UPDATE user SET role = ?, instruments = ?, commands = ?, disabled = ? "
                "WHERE name = ?",
                (
                    user.role,
                    json.dumps(user.instruments),
                    json.dumps(user.commands),
                    disabled,
                    name,
                ),
            )
        return user

    def users(self) -> list[User]:
        """Every user, by name."""
        if not self.exists():
            return []
        return sorted(self.load().users.values(), key=lambda u: u.name)

    def create_token(
        self,
        *,
        user: str | None = None,
        agent: str | None = None,
        instruments: tuple[str, ...] = (),
        expires: float | None = None,
        label: str = "",
    ) -> tuple[TokenRecord, str]:
        """Make a token for a user or an agent; return its record and the plaintext (shown once)."""
        if (user is None) == (agent is None):
            raise CredentialsError("a token is for a user or for an agent, exactly one")
        if user is not None:
            self._user(user)
        if agent is not None and not instruments:
            raise CredentialsError(
                "an agent token names the instruments the agent may announce (patterns allowed)"
            )
        db = self._connect(create=True)
        new = make_token(self._read_key())
        record = TokenRecord(
            id=new.id,
            digest=new.digest,
            user=user,
            agent=agent,
            instruments=instruments,
            label=label,
            created=time.time(),
            expires=expires,
        )
        with db:
            db.execute(
                "INSERT INTO token (id, user, agent, instruments, digest, label, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    user,
                    agent,
                    json.dumps(instruments) if agent is not None else None,
                    record.digest,
                    label,
                    record.created,
                    expires,
                ),
            )
        return record, new.plaintext

    def tokens(self) -> list[TokenRecord]:
        """Every token ever made (revoked ones too), oldest first."""
        if not self.exists():
            return []
        return sorted(self.load().tokens.values(), key=lambda t: (t.created, t.id))

    def revoke_token(self, token_id: str) -> TokenRecord:
        """Revoke a token; open connections that use it end within 1 s."""
        db = self._connect(create=True)
        with db:
            cursor = db.execute(
                "UPDATE token SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (time.time(), token_id),
            )
        record = self.load().tokens.get(token_id)
        if record is None:
            raise CredentialsError(f"no token {token_id!r}")
        if cursor.rowcount == 0:
            raise CredentialsError(f"token {token_id!r} was revoked already")
        return record

    # --- the files ----------------------------------------------------------------

    def _connect(self, *, create: bool) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if not create and not self.path.exists():
            raise CredentialsError(f"no credentials store at {self.path}")
        if create:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            _private_file(self.path)
            if not self.key_path.exists():
                _write_private(self.key_path, new_key())
        try:
            db = sqlite3.connect(self.path, timeout=2.0, check_same_thread=False)
            db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise CredentialsError(
                f"cannot open the credentials store {self.path}: {exc}"
            ) from None
        self._db = db
        return db

    def _read_key(self) -> bytes:
        try:
            return self.key_path.read_bytes()
        except OSError as exc:
            raise CredentialsError(
                f"cannot read the token key {self.key_path}: {exc.strerror or exc}"
            ) from None

    def _user(self, name: str) -> User:
        user = self.load().users.get(name) if self.exists() else None
        if user is None:
            raise CredentialsError(f"no user {name!r} (kmz user add {name} --role ...)")
        return user

    @staticmethod
    def _data_version(db: sqlite3.Connection) -> int:
        row = db.execute("PRAGMA data_version").fetchone()
        return int(row[0])


def _check_person_role(role: Role) -> None:
    if role not in PERSON_ROLES:
        raise CredentialsError(
            f"a user's role is one of {', '.join(PERSON_ROLES)}; agents get agent tokens"
        )


def _private_file(path: Path) -> None:
    """Create `path` readable by its owner only, if it does not exist."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)


def _write_private(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
