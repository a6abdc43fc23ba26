"""The hub's authentication service: who each connection is, kept current within a second.

Whether a hub requires tokens
-----------------------------
A hub requires a token from every peer as soon as its data folder holds a
credentials store (`credentials.SqliteCredentials`; `kmz user add`,
`kmz token create` and `kmz demo` create it). Without one, a hub bound to
loopback runs open, as hubs always did: every peer is `ANONYMOUS`, an admin,
and the hub says so in its log at start; the Origin check of browser
handshakes still applies, so a web page cannot drive it. A hub bound to any
other address without a credentials store refuses to start unless told
``--insecure`` (`check_startup`), and then logs a warning at start.

Presenting a token
------------------
At the WebSocket upgrade as ``Authorization: Bearer <token>`` (scripts,
curl, proxies), or in the hello's ``token`` field (agents, `kmz`, browsers,
which cannot set headers on a WebSocket): the hello is the first message and
must come within the handshake deadline, so an unauthenticated socket holds
a few kilobytes and is closed at the deadline. Both given and different:
refused. REST calls take the header only.

Refusals: a wrong, expired or revoked token, a disabled user, an agent token
used as another agent or for foreign instruments: `unauthorized` or
`forbidden`, close code 4001, which peers must not retry as is. A store that
cannot be read: `internal_error`, close code 1013 (try again later).

Revocation
----------
`watch` polls the store 4 times a second (``PRAGMA data_version``: one tiny
query) and reloads it when another process committed; it also re-checks
expiry. Each connected peer's principal is then resolved again from its
token id: one that lost its token, user or grant is told why, loses its
subscriptions and is closed with 4001; one whose grant changed keeps
only what the new grant allows. Per message, the principal is the one
resolved last, so a command after a revocation is refused even before the
close.

Dashboard sessions
------------------
A browser signs in with a token (or a one-time login code) and gets a
session (`sessions`); the session's secret, from its cookie, is then
accepted wherever a token is, and yields the principal of the token that
opened it, as it stands now, with ``token_id`` ``session:<id>``. Ending the
session (sign-out) or losing the token ends it on open connections within a
second, as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..errors import HubStartError
from .credentials import (
    UNKNOWN_TOKEN,
    CredentialsError,
    CredentialStore,
    Snapshot,
    SqliteCredentials,
)
from .leases import Leases
from .permissions import ANONYMOUS, Principal, Role
from .sessions import SESSION_PREFIX, Session, Sessions, session_id_of

_log = logging.getLogger(__name__)

#: How often the store is checked for changes and tokens for expiry.
POLL_S = 0.25


class Authenticator:
    """Resolves tokens to principals; the only writer of who each peer is, and of the leases."""

    def __init__(self, store: CredentialStore | None, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._snapshot: Snapshot | None = None
        #: Each authenticated peer's principal, keyed by the peer object.
        self._principals: dict[object, Principal] = {}
        self.leases = Leases()
        self.sessions = Sessions()

    @classmethod
    def for_data_dir(cls, data_dir: Path, clock: Callable[[], float]) -> Authenticator:
        """Required auth if `data_dir` holds a credentials store, else open."""
        store = SqliteCredentials(data_dir)
        return cls(store if store.exists() else None, clock)

    @property
    def ready(self) -> bool:
        """Whether tokens can be checked (the store is loaded, or none is needed)."""
        return self._store is None or self._snapshot is not None

    @property
    def required(self) -> bool:
        """Whether peers must present a token."""
        return self._store is not None

    def open(self) -> None:
        """Load the store (at hub start); `HubStartError` if it cannot be read."""
        if self._store is None:
            return
        try:
            self._snapshot = self._store.load()
        except CredentialsError as exc:
            raise HubStartError(str(exc)) from None

    def close(self) -> None:
        """Release the store."""
        if self._store is not None:
            self._store.close()

    # --- who is this ----------------------------------------------------------

    def authenticate(self, token: str | None) -> Principal | str:
        """The principal of a presented token, or why it is refused."""
        if self._store is None:
            return ANONYMOUS
        if self._snapshot is None:
            return "the hub's credentials are not loaded"
        if not token:
            return "this hub requires a token (kmz token create; see 'Securing a deployment')"
        if token.startswith(SESSION_PREFIX):
            session = self.sessions.resolve(token, self._clock())
            if session is None:
                return "the session has ended; sign in again"
            return self._session_principal(session)
        principal = self._snapshot.authenticate(token, self._clock())
        if principal == UNKNOWN_TOKEN and self._reload_if_changed():
            # Made since the last poll (`kmz token create` a moment ago): usable at once.
            principal = self._snapshot.authenticate(token, self._clock())
        return principal

    # --- dashboard sessions -------------------------------------------------------

    def sign_in(self, token: str) -> tuple[str, Principal] | str:
        """Open a session for a person's token: its secret (for the cookie) and principal.

        Or why not: a refused token, an agent's token, a hub without auth
        (which needs no sign-in), or a session's secret (sign in with a token).
        """
        if self._store is None:
            return "this hub runs without authentication: no sign-in is needed"
        if token.startswith(SESSION_PREFIX):
            return "sign in with a token, not a session"
        principal = self.authenticate(token)
        if isinstance(principal, str):
            return principal
        if principal.token_id is None or not principal.at_least(Role.VIEWER):
            return "an agent token cannot sign in to the dashboard"
        secret, session = self.sessions.open(principal.token_id, self._clock())
        return secret, replace(principal, token_id=session.principal_token_id)

    def login_code(self, token: str) -> str | None:
        """A one-time login code for a person's token (a login link), or None if it is refused."""
        if self._store is None:
            return None
        principal = self.authenticate(token)
        if isinstance(principal, str) or principal.token_id is None:
            return None
        if not principal.at_least(Role.VIEWER):
            return None
        return self.sessions.make_login_code(principal.token_id, self._clock())

    def redeem(self, code: str) -> tuple[str, Principal] | str:
        """Open a session with a one-time login code: its secret and principal, or why not."""
        if self._store is None or self._snapshot is None:
            return "this hub runs without authentication: no sign-in is needed"
        now = self._clock()
        token_id = self.sessions.redeem_login_code(code, now)
        if token_id is None:
            return "this login link was used already or has expired; sign in with a token"
        secret, session = self.sessions.open(token_id, now)
        principal = self._session_principal(session)
        if isinstance(principal, str):
            return principal
        return secret, principal

    def sign_out(self, secret: str) -> bool:
        """End the session a cookie's secret names; whether there was one."""
        return self.sessions.end(secret) is not None

    def _session_principal(self, session: Session) -> Principal | str:
        """The principal a live session stands for now, or why not (then the session ends)."""
        assert self._snapshot is not None
        principal = self._snapshot.principal(session.token_id, self._clock())
        if isinstance(principal, str):
            self.sessions.end_for_token(session.token_id)
            return principal
        return replace(principal, token_id=session.principal_token_id)

    def _resolve(self, snapshot: Snapshot, token_id: str, now: float) -> Principal | str:
        """A principal again from its `token_id`: a token's, or a session's."""
        session_id = session_id_of(token_id)
        if session_id is None:
            return snapshot.principal(token_id, now)
        session = self.sessions.by_id(session_id, now)
        if session is None:
            return "the session has ended (signed out or expired)"
        return self._session_principal(session)

    def _reload_if_changed(self) -> bool:
        """Reload now if another process committed (one tiny query); whether it did."""
        assert self._store is not None
        try:
            if not self._store.changed():
                return False
            self._snapshot = self._store.load()
        except CredentialsError as exc:
            _log.error("credentials store unreadable; keeping the last", extra={"error": str(exc)})
            return False
        return True

    def attach(self, peer: object, principal: Principal) -> None:
        """Remember who a welcomed peer is."""
        self._principals[peer] = principal

    def detach(self, peer: object) -> None:
        """Forget a peer that left."""
        self._principals.pop(peer, None)

    def principal(self, peer: object) -> Principal | None:
        """Who a peer is now; None if its credentials no longer hold (it is being closed)."""
        if self._store is None:
            return ANONYMOUS
        return self._principals.get(peer)

    # --- keeping it current -----------------------------------------------------

    async def watch(self, on_change: Callable[[object, Principal | str], None]) -> None:
        """Poll the store; call `on_change(peer, principal or reason)` for each peer that changed.

        Runs until cancelled. A reason means the peer's credentials no longer
        hold: it is detached first, so its next message is refused at once.
        """
        store = self._store
        if store is None:
            return
        while True:
            await asyncio.sleep(POLL_S)
            try:
                if await asyncio.to_thread(store.changed):
                    self._snapshot = await asyncio.to_thread(store.load)
            except CredentialsError as exc:
                _log.error(
                    "credentials store unreadable; keeping the last", extra={"error": str(exc)}
                )
            self.recheck(on_change)

    def recheck(self, on_change: Callable[[object, Principal | str], None]) -> None:
        """Resolve every attached peer again (a reload, an expiry) and report the changed ones."""
        snapshot = self._snapshot
        if snapshot is None:
            return
        now = self._clock()
        for peer, before in list(self._principals.items()):
            assert before.token_id is not None
            after = self._resolve(snapshot, before.token_id, now)
            if isinstance(after, str):
                del self._principals[peer]
                on_change(peer, after)
            elif after != before:
                self._principals[peer] = after
                on_change(peer, after)


def check_startup(host: str, auth_required: bool, insecure: bool) -> None:
    """Refuse to serve beyond this machine without auth, unless told `insecure`."""
    if auth_required or is_loopback(host):
        if not auth_required:
            _log.warning(
                "no credentials configured: every peer on this machine may watch and drive "
                "every instrument (kmz user add; see 'Securing a deployment')"
            )
        return
    if not insecure:
        raise HubStartError(
            f"refusing to listen on {host} without authentication: anyone on the network could "
            "drive the instruments. Create a user and a token first (kmz user add NAME --role "
            "admin --data DIR; kmz token create --user NAME --data DIR), or pass --insecure"
        )
    _log.warning(
        "INSECURE: listening beyond this machine without authentication; anyone who reaches "
        "this hub may watch and drive every instrument",
        extra={"host": host},
    )


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False
