"""A hub with credentials for auth tests: users of each role, tokens good and bad, agent tokens."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from kleinmaelzung.hub import HubConfig, RunningHub, start_hub
from kleinmaelzung.hub.auth import Role, SqliteCredentials
from kleinmaelzung.protocol import PROTOCOL_VERSION

from .peers import RawPeer, instrument


@dataclass
class Lab:
    """The hub, its credentials store, and the plaintext tokens by name."""

    hub: RunningHub
    store: SqliteCredentials
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.hub.url

    def token_id(self, name: str) -> str:
        return self.tokens[name].split("_")[1]


def make_credentials(data_dir: Path) -> tuple[SqliteCredentials, dict[str, str]]:
    """Users ada (admin), oscar and otto (operators), olga (operator on kiln-* running only
    set_setpoint), vic (viewer), dan (disabled); agent tokens for pi-1 and pi-2."""
    store = SqliteCredentials(data_dir)
    store.add_user("ada", Role.ADMIN)
    store.add_user("oscar", Role.OPERATOR)
    store.add_user("otto", Role.OPERATOR)
    store.add_user("olga", Role.OPERATOR, ("kiln-*",), ("set_setpoint",))
    store.add_user("vic", Role.VIEWER)
    store.add_user("dan", Role.OPERATOR)
    tokens: dict[str, str] = {}
    for user in ("ada", "oscar", "otto", "olga", "vic", "dan"):
        tokens[user] = store.create_token(user=user)[1]
    tokens["expired"] = store.create_token(user="oscar", expires=time.time() - 1)[1]
    revoked, tokens["revoked"] = store.create_token(user="oscar")
    store.revoke_token(revoked.id)
    store.set_user("dan", enabled=False)
    tokens["pi-1"] = store.create_token(agent="pi-1", instruments=("kiln-air", "balance"))[1]
    tokens["pi-2"] = store.create_token(agent="pi-2", instruments=("steep-*",))[1]
    return store, tokens


@asynccontextmanager
async def auth_lab(tmp_path: Path, **config: Any) -> AsyncIterator[Lab]:
    """A hub on 127.0.0.1 that requires tokens."""
    data = tmp_path / "hub-data"
    store, tokens = make_credentials(data)
    hub = await start_hub(
        HubConfig(host="127.0.0.1", port=0, data_dir=data, name="auth-hub", **config)
    )
    try:
        yield Lab(hub, store, tokens)
    finally:
        await hub.stop()
        store.close()


@asynccontextmanager
async def socket(
    url: str, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[RawPeer]:
    """A raw WebSocket, not yet greeted."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url.replace("http", "ws", 1) + path, headers=headers) as ws,
    ):
        yield RawPeer(ws)


def client_hello(token: str | None, name: str = "test") -> dict[str, Any]:
    return {"type": "client_hello", "protocol": PROTOCOL_VERSION, "token": token, "name": name}


def agent_hello(
    agent_id: str, ids: tuple[str, ...], token: str | None, run: str = "r1"
) -> dict[str, Any]:
    return {
        "type": "agent_hello",
        "protocol": PROTOCOL_VERSION,
        "agent_id": agent_id,
        "instruments": [_instrument(i) for i in ids],
        "run": run,
        "token": token,
    }


def _instrument(id_: str) -> dict[str, Any]:
    """A balance-like instrument with `tare` and `set_setpoint value=...`."""
    announced = instrument(id_, ("tare",))
    announced["commands"].append({"name": "set_setpoint", "args": [{"name": "value"}]})
    return announced


@asynccontextmanager
async def greeted(url: str, path: str, hello: dict[str, Any]) -> AsyncIterator[RawPeer]:
    """A raw peer whose hello was welcomed."""
    async with socket(url, path) as peer:
        await peer.send(hello)
        welcome = await peer.receive()
        assert welcome["type"] == "welcome", welcome
        yield peer


async def closed_with(peer: RawPeer, timeout: float = 5.0) -> tuple[list[dict[str, Any]], int]:
    """Everything the hub sent until it closed, and the close code."""
    received: list[dict[str, Any]] = []
    while True:
        msg = await peer.ws.receive(timeout=timeout)
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            import msgspec

            received.append(msgspec.json.decode(msg.data))
            continue
        code = peer.ws.close_code
        assert code is not None, msg
        return received, code
