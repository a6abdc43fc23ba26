"""Dashboard sessions: the table (expiry, eviction, one-time codes), and how the hub uses it.

Over HTTP and WebSocket, with cookies: tests/hub/test_dashboard_http.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from kleinmaelzung.hub.auth import Authenticator, Role, SqliteCredentials
from kleinmaelzung.hub.auth.sessions import LOGIN_PREFIX, SESSION_PREFIX, Sessions


def test_a_session_is_kept_as_a_digest_and_resolves_to_its_token() -> None:
    sessions = Sessions()
    secret, session = sessions.open("tok1", now=100.0)
    assert secret.startswith(SESSION_PREFIX) and len(secret) == len(SESSION_PREFIX) + 43
    assert secret not in repr(sessions.__dict__)
    assert hashlib.sha256(secret.encode()).hexdigest().startswith(session.id)
    found = sessions.resolve(secret, now=101.0)
    assert found is session and found.token_id == "tok1" and found.last_used == 101.0
    assert sessions.resolve(secret + "x", now=101.0) is None
    assert sessions.resolve("kmz_not_a_session", now=101.0) is None


def test_sessions_end_when_idle_when_too_old_at_logout_and_with_their_token() -> None:
    sessions = Sessions(idle_s=10.0, max_age_s=30.0)
    idle, _ = sessions.open("a", now=0.0)
    assert sessions.resolve(idle, now=11.0) is None  # idle too long
    old, _ = sessions.open("a", now=0.0)
    for now in (9.0, 18.0, 27.0):
        assert sessions.resolve(old, now=now) is not None
    assert sessions.resolve(old, now=31.0) is None  # past its maximum age, though used
    out, _ = sessions.open("a", now=0.0)
    assert sessions.end(out) is not None
    assert sessions.resolve(out, now=1.0) is None
    assert sessions.end(out) is None
    one, _ = sessions.open("b", now=0.0)
    two, _ = sessions.open("b", now=0.0)
    other, _ = sessions.open("c", now=0.0)
    assert sessions.end_for_token("b") == 2
    assert sessions.resolve(one, 1.0) is None and sessions.resolve(two, 1.0) is None
    assert sessions.resolve(other, 1.0) is not None


def test_an_open_connection_keeps_its_session_from_going_idle() -> None:
    sessions = Sessions(idle_s=10.0, max_age_s=100.0)
    secret, session = sessions.open("a", now=0.0)
    for now in (8.0, 16.0, 24.0, 32.0):  # the hub rechecks its connections
        assert sessions.by_id(session.id, now) is session
    assert sessions.resolve(secret, now=40.0) is session
    assert sessions.by_id(session.id, now=101.0) is None  # but not past its maximum age


def test_the_least_recently_used_session_goes_beyond_the_limit() -> None:
    sessions = Sessions(max_sessions=3)
    first, _ = sessions.open("a", 0.0)
    second, _ = sessions.open("a", 1.0)
    sessions.open("a", 2.0)
    assert sessions.resolve(first, 3.0) is not None  # now used more recently than the second
    sessions.open("a", 4.0)
    assert len(sessions) == 3
    assert sessions.resolve(second, 5.0) is None
    assert sessions.resolve(first, 5.0) is not None


def test_a_login_code_works_once_and_expires() -> None:
    sessions = Sessions(login_code_s=60.0)
    code = sessions.make_login_code("tok1", now=0.0)
    assert code.startswith(LOGIN_PREFIX)
    assert sessions.redeem_login_code(code, now=1.0) == "tok1"
    assert sessions.redeem_login_code(code, now=2.0) is None  # once
    late = sessions.make_login_code("tok1", now=0.0)
    assert sessions.redeem_login_code(late, now=61.0) is None
    assert sessions.redeem_login_code("kmzl_guess", now=1.0) is None


def test_the_authenticator_signs_in_with_a_token_and_follows_it(tmp_path: Path) -> None:
    store = SqliteCredentials(tmp_path)
    store.add_user("ada", Role.ADMIN)
    record, token = store.create_token(user="ada")
    _, agent_token = store.create_token(agent="pi-1", instruments=("kiln-air",))
    now = [1000.0]
    auth = Authenticator(SqliteCredentials(tmp_path), lambda: now[0])
    auth.open()
    try:
        opened = auth.sign_in(token)
        assert not isinstance(opened, str)
        secret, principal = opened
        assert principal.name == "ada" and str(principal.token_id).startswith("session:")
        again = auth.authenticate(secret)
        assert not isinstance(again, str) and again.token_id == principal.token_id
        assert isinstance(auth.sign_in(agent_token), str)  # agents do not sign in
        assert isinstance(auth.sign_in(secret), str)  # nor does a session sign in again
        code = auth.login_code(token)
        assert code is not None
        by_link = auth.redeem(code)
        assert not isinstance(by_link, str) and by_link[1].name == "ada"
        assert isinstance(auth.redeem(code), str)  # once
        store.revoke_token(record.id)
        changed: list[object] = []
        auth.attach("peer", principal)
        auth._reload_if_changed()  # what the hub's watch does 4 times a second
        auth.recheck(lambda peer, change: changed.append(change))
        assert changed and isinstance(changed[0], str)  # its connections are told, and closed
        assert isinstance(auth.authenticate(secret), str)
        assert len(auth.sessions) == 0
    finally:
        auth.close()
        store.close()


def test_an_open_hub_has_no_sign_in(tmp_path: Path) -> None:
    auth = Authenticator(None, lambda: 0.0)
    assert isinstance(auth.sign_in("kmz_x"), str)
    assert auth.login_code("kmz_x") is None
