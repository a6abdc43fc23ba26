"""Dashboard sessions: what a browser holds instead of a token, and one-time login links.

A person signs in to the dashboard once, with a personal API token (pasted
into the page) or a one-time login link (`kmz demo` prints one); the hub
answers with a session cookie. The session stands for the token that opened
it: it carries that token's grant as it stands now, so revoking the token,
disabling the user or narrowing the grant reaches every session (and every
WebSocket a session opened) within a second, as for a token.

What is kept: a session's secret is 32 random bytes (``kmzs_`` + 43
characters of URL-safe base64), sent to the browser once in the cookie; the
hub keeps only its SHA-256 digest (256 random bits need no slow or keyed
hash: nothing can be guessed from the digest). A session ends at logout, when
idle for `idle_s` (an open WebSocket of the session is use), at `max_age_s`
after sign-in, when its token no longer
holds, or when the hub restarts (sessions live in memory only). At most
`max_sessions` are kept; beyond that the least recently used goes.

A login code (``kmzl_...``) is a one-time secret bound to a token id, kept
as a digest too, valid once and for `login_code_s`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass

#: The prefix of a session's secret, as sent in the cookie.
SESSION_PREFIX = "kmzs_"
#: The prefix of a one-time login code.
LOGIN_PREFIX = "kmzl_"
#: A principal's `token_id` for a session: this prefix and the session's public id.
SESSION_TOKEN_PREFIX = "session:"

#: A session unused this long ends (seconds).
IDLE_S = 12 * 3600.0
#: A session ends this long after sign-in, used or not.
MAX_AGE_S = 7 * 86400.0
#: Sessions kept at most (a lab has tens of people; each is ~200 bytes).
MAX_SESSIONS = 1000
#: A login code is valid this long after it was made.
LOGIN_CODE_S = 12 * 3600.0
#: Login codes kept at most.
MAX_LOGIN_CODES = 100


@dataclass(slots=True)
class Session:
    """One signed-in browser: the token it stands for, and its times."""

    #: Public id (the first 16 hex digits of the digest): names it in logs and principals.
    id: str
    token_id: str
    created: float
    last_used: float

    @property
    def principal_token_id(self) -> str:
        """The `token_id` of the principals this session yields."""
        return SESSION_TOKEN_PREFIX + self.id


@dataclass(frozen=True, slots=True)
class LoginCode:
    """A one-time login link's secret, as kept: the token it signs in with, and its expiry."""

    token_id: str
    expires: float


class Sessions:
    """The hub's dashboard sessions and login codes; the only writer of both."""

    def __init__(
        self,
        *,
        idle_s: float = IDLE_S,
        max_age_s: float = MAX_AGE_S,
        max_sessions: int = MAX_SESSIONS,
        login_code_s: float = LOGIN_CODE_S,
    ) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self.max_sessions = max_sessions
        self.login_code_s = login_code_s
        #: By digest of the secret, least recently used first.
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._by_id: dict[str, str] = {}
        self._codes: OrderedDict[str, LoginCode] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    # --- sessions ---------------------------------------------------------------

    def open(self, token_id: str, now: float) -> tuple[str, Session]:
        """A new session for a verified token: its secret (for the cookie, once) and record."""
        secret = SESSION_PREFIX + secrets.token_urlsafe(32)
        key = _digest(secret)
        session = Session(id=key[:16], token_id=token_id, created=now, last_used=now)
        self._sessions[key] = session
        self._by_id[session.id] = key
        while len(self._sessions) > self.max_sessions:
            _, oldest = self._sessions.popitem(last=False)
            self._by_id.pop(oldest.id, None)
        return secret, session

    def resolve(self, secret: str, now: float) -> Session | None:
        """The live session a cookie's secret names (marking it used), or None."""
        if not secret.startswith(SESSION_PREFIX):
            return None
        key = _digest(secret)
        session = self._sessions.get(key)
        if session is None:
            return None
        if not self._alive(session, now):
            self._drop(key)
            return None
        session.last_used = now
        self._sessions.move_to_end(key)
        return session

    def by_id(self, session_id: str, now: float) -> Session | None:
        """The live session of an open connection, by public id (marking it used), or None.

        A connection that is open counts as use: a dashboard left on a lab
        monitor stays signed in (up to `max_age_s`) while its WebSocket lives.
        """
        key = self._by_id.get(session_id)
        if key is None:
            return None
        session = self._sessions[key]
        if not self._alive(session, now):
            self._drop(key)
            return None
        session.last_used = now
        return session

    def end(self, secret: str) -> Session | None:
        """End the session a secret names (logout); the session it was, if any."""
        if not secret.startswith(SESSION_PREFIX):
            return None
        return self._drop(_digest(secret))

    def end_for_token(self, token_id: str) -> int:
        """End every session opened with `token_id` (it was revoked); how many."""
        keys = [k for k, s in self._sessions.items() if s.token_id == token_id]
        for key in keys:
            self._drop(key)
        return len(keys)

    def _alive(self, session: Session, now: float) -> bool:
        return now - session.last_used < self.idle_s and now - session.created < self.max_age_s

    def _drop(self, key: str) -> Session | None:
        session = self._sessions.pop(key, None)
        if session is not None:
            self._by_id.pop(session.id, None)
        return session

    # --- one-time login codes -----------------------------------------------------

    def make_login_code(self, token_id: str, now: float) -> str:
        """A one-time code that signs in with `token_id` (for a login link)."""
        code = LOGIN_PREFIX + secrets.token_urlsafe(32)
        self._codes[_digest(code)] = LoginCode(token_id, now + self.login_code_s)
        while len(self._codes) > MAX_LOGIN_CODES:
            self._codes.popitem(last=False)
        return code

    def redeem_login_code(self, code: str, now: float) -> str | None:
        """The token id a login code signs in with, once; None if unknown, used or expired."""
        if not code.startswith(LOGIN_PREFIX):
            return None
        entry = self._codes.pop(_digest(code), None)
        if entry is None or entry.expires <= now:
            return None
        return entry.token_id


def session_id_of(token_id: str | None) -> str | None:
    """The session id inside a principal's `token_id`, if it came from a session."""
    if token_id is not None and token_id.startswith(SESSION_TOKEN_PREFIX):
        return token_id[len(SESSION_TOKEN_PREFIX) :]
    return None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
