"""The pure parts of auth: tokens, grants, leases, the credentials store, Origin rules."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kleinmaelzung.hub.auth import CredentialsError, Principal, Role, SqliteCredentials
from kleinmaelzung.hub.auth.leases import MAX_LEASE_S, Leases
from kleinmaelzung.hub.auth.service import check_startup, is_loopback
from kleinmaelzung.hub.auth.tokens import digest, make_token, new_key, split_token, verify
from kleinmaelzung.hub.errors import HubStartError


def test_a_token_is_random_and_only_its_keyed_digest_is_kept() -> None:
    key = new_key()
    first, second = make_token(key), make_token(key)
    assert first.plaintext != second.plaintext and first.id != second.id
    parts = split_token(first.plaintext)
    assert parts is not None and parts[0] == first.id
    assert first.digest == digest(key, parts[1]) and parts[1] not in first.digest
    assert verify(key, parts[1], first.digest)
    assert not verify(new_key(), parts[1], first.digest)  # the key matters
    assert split_token("kmz_xyz") is None and split_token(first.plaintext + "x") is None


def test_roles_and_grants() -> None:
    olga = Principal("olga", Role.OPERATOR, ("kiln-*",), ("set_setpoint",), token_id="t")
    assert olga.may_watch("kiln-air") and not olga.may_watch("balance")
    assert olga.may_command("kiln-air", "set_setpoint")
    assert not olga.may_command("kiln-air", "tare")
    assert not olga.may_command("balance", "set_setpoint")
    assert olga.may_subscribe("kiln-*") and olga.may_subscribe("kiln-air")
    assert not olga.may_subscribe("*") and not olga.may_subscribe("k*")
    vic = Principal("vic", Role.VIEWER, token_id="t")
    assert vic.may_watch("anything") and not vic.may_command("kiln-air", "tare")
    agent = Principal("agent:pi", Role.AGENT, ("kiln-*",), (), token_id="t", agent_id="pi")
    assert not agent.may_watch("kiln-air")
    assert agent.may_announce("pi", ["kiln-air"]) is None
    assert "pi-2" in (agent.may_announce("pi-2", ["kiln-air"]) or "")
    assert "balance" in (agent.may_announce("pi", ["kiln-air", "balance"]) or "")
    assert vic.may_announce("pi", []) is not None  # a person is not an agent


def test_a_lease_belongs_to_one_person_until_it_ends() -> None:
    leases = Leases()
    taken = leases.take("kiln-air", "oscar", 60, now=100.0)
    assert (taken.holder, taken.expires) == ("oscar", 160.0)
    assert leases.take("kiln-air", "otto", 60, now=110.0).holder == "oscar"
    assert leases.permits("kiln-air", "otto", 110.0) is taken
    assert leases.permits("kiln-air", "oscar", 110.0) is None
    assert not leases.release("kiln-air", "otto", 110.0)
    assert leases.release("kiln-air", "otto", 110.0, force=True)  # an admin
    leases.take("kiln-air", "otto", 10**9, now=200.0)
    assert leases.holder("kiln-air", 200.0).expires == 200.0 + MAX_LEASE_S  # type: ignore[union-attr]
    assert [lease.holder for lease in leases.expired(200.0 + MAX_LEASE_S)] == ["otto"]
    assert leases.permits("kiln-air", "oscar", 200.0 + MAX_LEASE_S) is None


def test_the_store_resolves_tokens_as_they_stand_now(tmp_path: Path) -> None:
    store = SqliteCredentials(tmp_path)
    assert not store.exists()
    store.add_user("ada", Role.ADMIN)
    with pytest.raises(CredentialsError, match="role"):
        store.add_user("bot", Role.AGENT)
    record, token = store.create_token(user="ada", expires=time.time() + 60)
    snapshot = store.load()
    assert isinstance(snapshot.authenticate(token, time.time()), Principal)
    assert "expired" in str(snapshot.authenticate(token, time.time() + 61))
    assert snapshot.authenticate(token[:-1] + "x", 0.0) == "unknown token"
    other = SqliteCredentials(tmp_path)  # another process, as kmz would be
    assert not store.changed()
    other.set_user("ada", enabled=False)
    assert store.changed()
    assert "disabled" in str(store.load().principal(record.id, time.time()))
    other.revoke_token(record.id)
    assert "revoked" in str(store.load().principal(record.id, time.time()))
    with pytest.raises(CredentialsError, match="already"):
        other.revoke_token(record.id)
    assert token.split("_", 2)[2].encode() not in store.path.read_bytes()


def test_only_loopback_may_run_without_auth() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("hub.lab.example")
    check_startup("127.0.0.1", auth_required=False, insecure=False)
    check_startup("0.0.0.0", auth_required=True, insecure=False)
    check_startup("0.0.0.0", auth_required=False, insecure=True)
    with pytest.raises(HubStartError, match="--insecure"):
        check_startup("192.0.2.1", auth_required=False, insecure=False)
