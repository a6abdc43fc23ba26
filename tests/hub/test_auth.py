"""Issue 11: who may watch and who may drive, against a real hub on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from kleinmaelzung.hub import HubConfig, HubStartError, RunningHub, create_app
from kleinmaelzung.hub.auth import Role, SqliteCredentials
from kleinmaelzung.protocol import LogEntry

from .auth_setup import Lab, agent_hello, auth_lab, client_hello, closed_with, greeted, socket
from .peers import data

CLIENT, AGENT = "/ws/client", "/ws/agent"

#: Every message a client or an agent may send after its hello.
AFTER_HELLO: dict[str, list[dict[str, Any]]] = {
    CLIENT: [
        {"type": "subscribe", "id": "s", "patterns": ["*"]},
        {"type": "unsubscribe", "id": "u", "patterns": ["*"]},
        {"type": "list_instruments", "id": "l"},
        {"type": "command", "id": "c", "instrument": "kiln-air", "name": "tare"},
    ],
    AGENT: [
        data("kiln-air", 1),
        {"type": "status", "instrument": "kiln-air", "state": "online", "ts": 1.0},
        {
            "type": "gap",
            "instrument": "kiln-air",
            "run": "r1",
            "first_seq": 1,
            "last_seq": 2,
            "count": 2,
            "reason": "x",
        },
        {"type": "agent_state", "spool_depth": 0, "spool_oldest": None, "dropped": 0},
        {"type": "reply", "id": "x", "ok": True},
        {"type": "error", "code": "internal_error", "message": "x"},
    ],
}


async def refused_entries(hub: RunningHub) -> list[LogEntry]:
    await hub.hub.store.flush()
    return await hub.hub.store.query(types=("refused",), limit=1000)


def codes(entries: list[LogEntry]) -> list[str]:
    return [msgspec.json.decode(e.message)["error"]["code"] for e in entries]


async def command(peer: Any, id_: str, instrument: str, name: str, **args: Any) -> dict[str, Any]:
    await peer.send(
        {"type": "command", "id": id_, "instrument": instrument, "name": name, "args": args}
    )
    return await peer.receive_type("reply")


BAD_TOKENS = ["none", "wrong", "malformed", "expired", "revoked", "dan"]


def bad_token(lab: Lab, kind: str) -> str | None:
    if kind == "none":
        return None
    if kind == "wrong":  # well formed, a real id, another secret
        return f"kmz_{lab.token_id('oscar')}_{'A' * 43}"
    if kind == "malformed":
        return "hunter2"
    return lab.tokens[kind]


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_hellos_without_a_good_token_are_refused_with_4001_and_logged(
    tmp_path: Path, kind: str
) -> None:
    async with auth_lab(tmp_path) as lab:
        token = bad_token(lab, kind)
        for path, hello in (
            (CLIENT, client_hello(token)),
            (AGENT, agent_hello("pi-1", ("kiln-air",), token)),
        ):
            async with socket(lab.url, path) as peer:
                await peer.send(hello)
                received, code = await closed_with(peer)
            assert code == 4001
            assert [m["code"] for m in received] == ["unauthorized"]
        assert codes(await refused_entries(lab.hub)) == ["unauthorized", "unauthorized"]
        assert not lab.hub.hub.registry.instruments  # the agent announced nothing


@pytest.mark.parametrize("path", [CLIENT, AGENT])
async def test_no_message_type_gets_past_a_missing_hello(tmp_path: Path, path: str) -> None:
    async with auth_lab(tmp_path) as lab:
        for message in AFTER_HELLO[path]:
            async with socket(lab.url, path) as peer:
                await peer.send(message)
                received, code = await closed_with(peer)
            assert code == 4000, message
            assert [m["code"] for m in received] == ["hello_expected"]


async def test_a_token_in_the_authorization_header_is_accepted(tmp_path: Path) -> None:
    async with auth_lab(tmp_path) as lab:
        headers = {"Authorization": f"Bearer {lab.tokens['vic']}"}
        async with socket(lab.url, CLIENT, headers) as peer:
            await peer.send(client_hello(None))
            assert (await peer.receive())["type"] == "welcome"
        async with socket(lab.url, CLIENT, headers) as peer:
            await peer.send(client_hello(lab.tokens["ada"]))  # two different tokens
            received, code = await closed_with(peer)
        assert (code, received[0]["code"]) == (4001, "unauthorized")


async def test_commands_outside_the_grant_are_refused_and_never_reach_the_agent(
    tmp_path: Path,
) -> None:
    async with (
        auth_lab(tmp_path) as lab,
        greeted(
            lab.url, AGENT, agent_hello("pi-1", ("kiln-air", "balance"), lab.tokens["pi-1"])
        ) as agent,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["vic"])) as viewer,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["olga"])) as olga,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["ada"])) as admin,
    ):
        refusals = [
            await command(viewer, "1", "kiln-air", "tare"),  # a viewer
            await command(olga, "2", "balance", "set_setpoint", value=1),  # outside kiln-*
            await command(olga, "3", "kiln-air", "tare"),  # a command she may not run
        ]
        assert [(r["ok"], r["error"]["code"]) for r in refusals] == [(False, "forbidden")] * 3
        # Only what is allowed reaches the agent: the first command it gets is this one.
        await admin.send(
            {
                "type": "command",
                "id": "4",
                "instrument": "kiln-air",
                "name": "set_setpoint",
                "args": {"value": 42},
            }
        )
        forwarded = await agent.receive_type("command")
        assert (forwarded["name"], forwarded["args"]) == ("set_setpoint", {"value": 42})
        await agent.send({"type": "reply", "id": forwarded["id"], "ok": True})
        assert (await admin.receive_type("reply"))["ok"] is True
        # olga may run what she is granted.
        await olga.send(
            {
                "type": "command",
                "id": "5",
                "instrument": "kiln-air",
                "name": "set_setpoint",
                "args": {"value": 7},
            }
        )
        assert (await agent.receive_type("command"))["args"] == {"value": 7}
        assert codes(await refused_entries(lab.hub)) == ["forbidden"] * 3


async def test_subscriptions_and_lists_stay_within_the_grant(tmp_path: Path) -> None:
    async with (
        auth_lab(tmp_path) as lab,
        greeted(
            lab.url, AGENT, agent_hello("pi-1", ("kiln-air", "balance"), lab.tokens["pi-1"])
        ) as agent,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["olga"])) as olga,
    ):
        await olga.send({"type": "subscribe", "id": "1", "patterns": ["*"]})
        error = await olga.receive_type("error")
        assert (error["code"], error["id"]) == ("forbidden", "1")
        await olga.send({"type": "subscribe", "id": "2", "patterns": ["balance"]})
        assert (await olga.receive_type("error"))["code"] == "forbidden"
        await olga.send({"type": "subscribe", "id": "3", "patterns": ["kiln-*"]})
        assert (await olga.receive_type("subscribed"))["instruments"] == ["kiln-air"]
        await olga.send({"type": "list_instruments", "id": "4"})
        listed = await olga.receive_type("instrument_list")
        assert [r["id"] for r in listed["instruments"]] == ["kiln-air"]
        await agent.send(data("balance", 1))
        await agent.send(data("kiln-air", 1))
        sample = (await olga.receive_type("data"))["samples"][0]
        assert sample["instrument"] == "kiln-air"


async def test_an_agent_token_cannot_take_another_agents_id_or_instruments(
    tmp_path: Path,
) -> None:
    async with (
        auth_lab(tmp_path) as lab,
        greeted(lab.url, AGENT, agent_hello("pi-1", ("kiln-air",), lab.tokens["pi-1"])) as real,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["ada"])) as admin,
    ):
        attempts = [
            (AGENT, agent_hello("pi-1", ("steep-water",), lab.tokens["pi-2"])),  # takeover
            (AGENT, agent_hello("pi-2", ("kiln-air",), lab.tokens["pi-2"])),  # foreign id
            (AGENT, agent_hello("pi-1", ("kiln-air", "steep-water"), lab.tokens["pi-1"])),
            (AGENT, agent_hello("pi-1", ("kiln-air",), lab.tokens["ada"])),  # a person
            (CLIENT, client_hello(lab.tokens["pi-1"])),  # an agent token as a client
        ]
        for path, hello in attempts:
            async with socket(lab.url, path) as peer:
                await peer.send(hello)
                received, code = await closed_with(peer)
            assert (code, [m["code"] for m in received]) == (4001, ["forbidden"]), hello
        # The real agent was not replaced: commands still reach it.
        await admin.send({"type": "command", "id": "1", "instrument": "kiln-air", "name": "tare"})
        forwarded = await real.receive_type("command")
        assert forwarded["name"] == "tare"
        assert lab.hub.hub.registry.instruments["kiln-air"].agent == "pi-1"
        assert "steep-water" not in lab.hub.hub.registry.instruments
        assert codes(await refused_entries(lab.hub)) == ["forbidden"] * len(attempts)


async def test_an_absurd_seq_is_refused_and_does_not_silence_the_instrument(
    hub: RunningHub,
) -> None:
    # On a hub without auth too: this is about a buggy or hostile agent.
    async with (
        greeted(hub.url, AGENT, agent_hello("pi-1", ("balance",), None)) as agent,
        greeted(hub.url, CLIENT, client_hello(None)) as client,
    ):
        await client.send({"type": "subscribe", "id": "1", "patterns": ["balance"]})
        await client.receive_type("subscribed")
        await agent.send(data("balance", 1, 2))
        await client.receive_type("data")
        await agent.send(data("balance", 10**15))
        error = await agent.receive_type("error")
        assert error["code"] == "seq_out_of_range"
        await agent.send(data("balance", 3))
        sample = (await client.receive_type("data"))["samples"][0]
        assert sample["seq"] == 3
        assert hub.hub.registry.instruments["balance"].seqs["r1"] == 3
        assert codes(await refused_entries(hub)) == ["seq_out_of_range"]


async def test_an_agent_cannot_pass_off_values_as_calibrated(hub: RunningHub) -> None:
    # Only the hub applies calibrations: `corrected` from an agent is refused.
    async with (
        greeted(hub.url, AGENT, agent_hello("pi-1", ("balance",), None)) as agent,
        greeted(hub.url, CLIENT, client_hello(None)) as client,
    ):
        await client.send({"type": "subscribe", "id": "1", "patterns": ["balance"]})
        await client.receive_type("subscribed")
        forged = {"instrument": "balance", "seq": 1, "ts": 2.0, "values": {"mass": 1.0}}
        forged |= {"corrected": {"mass": 100.0}, "calibration": "KMZ-2026-0001"}
        await agent.send({"type": "data", "samples": [forged]})
        error = await agent.receive_type("error")
        assert error["code"] == "invalid_message" and "only the hub" in error["message"]
        await agent.send(data("balance", 1))
        sample = (await client.receive_type("data"))["samples"][0]
        assert sample["seq"] == 1 and "corrected" not in sample
        assert codes(await refused_entries(hub)) == ["invalid_message"]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://evil.example", False),
        ("null", False),
        ("https://dash.lab.example", True),  # allow-listed
        ("SAME", True),  # the hub's own page
    ],
)
async def test_cross_origin_handshakes_are_refused(
    tmp_path: Path, origin: str, allowed: bool
) -> None:
    async with auth_lab(tmp_path, allowed_origins=("https://dash.lab.example",)) as lab:
        origin = lab.url if origin == "SAME" else origin
        if not allowed:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with socket(lab.url, CLIENT, {"Origin": origin}):
                    pass
            assert refused.value.status == 403
            assert codes(await refused_entries(lab.hub)) == ["forbidden"]
            return
        async with socket(lab.url, CLIENT, {"Origin": origin}) as peer:
            await peer.send(client_hello(lab.tokens["vic"]))
            assert (await peer.receive())["type"] == "welcome"


async def test_an_open_loopback_hub_refuses_other_origins_too(hub: RunningHub) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with socket(hub.url, CLIENT, {"Origin": "https://evil.example"}):
            pass
    assert refused.value.status == 403
    async with socket(hub.url, CLIENT) as peer:  # scripts send no Origin
        await peer.send(client_hello(None))
        assert (await peer.receive())["type"] == "welcome"


async def test_a_token_revoked_mid_stream_ends_its_subscriptions_within_a_second(
    tmp_path: Path,
) -> None:
    async with (
        auth_lab(tmp_path) as lab,
        greeted(lab.url, AGENT, agent_hello("pi-1", ("kiln-air",), lab.tokens["pi-1"])) as agent,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["oscar"])) as oscar,
    ):
        await oscar.send({"type": "subscribe", "id": "1", "patterns": ["kiln-air"]})
        await oscar.receive_type("subscribed")
        await agent.send(data("kiln-air", 1))
        await oscar.receive_type("data")
        # As `kmz token revoke` does: another connection to the store.
        revoked_at = time.monotonic()
        SqliteCredentials(lab.store.data_dir).revoke_token(lab.token_id("oscar"))
        received, code = await closed_with(oscar, timeout=2.0)
        assert time.monotonic() - revoked_at < 1.0
        assert code == 4001
        assert received[-1]["code"] == "unauthorized"
        assert not lab.hub.hub.subscriptions.subscribers("kiln-air")
        # Its commands are refused: over HTTP at once, over a new connection too.
        async with socket(lab.url, CLIENT) as again:
            await again.send(client_hello(lab.tokens["oscar"]))
            _, code = await closed_with(again)
        assert code == 4001


async def test_a_narrowed_grant_unsubscribes_what_it_no_longer_covers(tmp_path: Path) -> None:
    async with (
        auth_lab(tmp_path) as lab,
        greeted(lab.url, AGENT, agent_hello("pi-1", ("kiln-air",), lab.tokens["pi-1"])),
        greeted(lab.url, CLIENT, client_hello(lab.tokens["oscar"])) as oscar,
    ):
        await oscar.send({"type": "subscribe", "id": "1", "patterns": ["kiln-*"]})
        await oscar.receive_type("subscribed")
        SqliteCredentials(lab.store.data_dir).set_user("oscar", instruments=("balance",))
        error = await oscar.receive_type("error", timeout=1.0)
        assert error["code"] == "forbidden" and "kiln-*" in error["message"]
        reply = await command(oscar, "2", "kiln-air", "tare")
        assert reply["error"]["code"] == "forbidden"


async def test_the_lease_holds_against_a_second_operator(tmp_path: Path) -> None:
    async with (
        auth_lab(tmp_path) as lab,
        greeted(lab.url, AGENT, agent_hello("pi-1", ("kiln-air",), lab.tokens["pi-1"])) as agent,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["oscar"])) as oscar,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["otto"])) as otto,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["vic"])) as watcher,
    ):
        await watcher.send({"type": "subscribe", "id": "1", "patterns": ["kiln-air"]})
        await watcher.receive_type("subscribed")
        await watcher.receive_type("status")  # the state on subscribing
        taken = await command(oscar, "1", "kiln-air", "lease", duration_s=60)
        assert taken["ok"] is True and taken["result"]["holder"] == "oscar"
        leased = await watcher.receive_type("status")
        assert leased["lease"]["holder"] == "oscar" and leased["reason"] == ""
        assert leased["lease"]["until"] == taken["result"]["expires"]
        await otto.send({"type": "list_instruments", "id": "l"})  # seen by whoever looks later
        listed = (await otto.receive_type("instrument_list"))["instruments"]
        assert listed[0]["lease"] == leased["lease"]
        # The agent's own status keeps the instrument's reason, and the lease stays shown.
        await agent.send(
            {"type": "status", "instrument": "kiln-air", "state": "faulted", "ts": 2.0,
             "reason": "no answer"}
        )  # fmt: skip
        faulted = await watcher.receive_type("status")
        assert (faulted["reason"], faulted["lease"]) == ("no answer", leased["lease"])
        held = await command(otto, "2", "kiln-air", "tare")
        assert held["error"]["code"] == "lease_held" and "oscar" in held["error"]["message"]
        stolen = await command(otto, "3", "kiln-air", "lease")
        assert stolen["error"]["code"] == "lease_held"
        ended = await command(otto, "4", "kiln-air", "release")
        assert ended["error"]["code"] == "lease_held"
        await oscar.send({"type": "command", "id": "5", "instrument": "kiln-air", "name": "tare"})
        first = await agent.receive_type("command")  # otto's never arrived
        assert first["name"] == "tare"
        await agent.send({"type": "reply", "id": first["id"], "ok": True})
        assert (await oscar.receive_type("reply"))["ok"] is True
        released = await command(oscar, "6", "kiln-air", "release")
        assert released["ok"] is True
        ended = await watcher.receive_type("status")
        assert (ended["lease"], ended["reason"]) == (None, "no answer")
        await otto.send({"type": "command", "id": "7", "instrument": "kiln-air", "name": "tare"})
        assert (await agent.receive_type("command"))["name"] == "tare"


async def test_a_lease_expires_and_watchers_are_told(tmp_path: Path) -> None:
    async with (
        auth_lab(tmp_path) as lab,
        greeted(lab.url, AGENT, agent_hello("pi-1", ("kiln-air",), lab.tokens["pi-1"])),
        greeted(lab.url, CLIENT, client_hello(lab.tokens["oscar"])) as oscar,
    ):
        await oscar.send({"type": "subscribe", "id": "1", "patterns": ["kiln-air"]})
        await oscar.receive_type("status")
        assert (await command(oscar, "2", "kiln-air", "lease", duration_s=1))["ok"] is True
        assert (await oscar.receive_type("status"))["lease"]["holder"] == "oscar"
        status = await oscar.receive_type("status", timeout=3.0)
        assert status["lease"] is None


async def test_the_databases_hold_no_plaintext_token(tmp_path: Path) -> None:
    async with auth_lab(tmp_path) as lab:
        for name in ("oscar", "revoked", "expired", "pi-1"):
            path, hello = (
                (AGENT, agent_hello("pi-1", ("kiln-air",), lab.tokens[name]))
                if name == "pi-1"
                else (CLIENT, client_hello(lab.tokens[name]))
            )
            async with socket(lab.url, path) as peer:
                await peer.send(hello)
                await peer.receive()
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {lab.tokens['revoked']}"}
            async with session.get(lab.url + "/api/instruments", headers=headers) as response:
                assert response.status == 401
        await lab.hub.hub.store.flush()
    files = [p for p in (tmp_path / "hub-data").iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"traffic.sqlite3", "credentials.sqlite3"}
    contents = b"".join(p.read_bytes() for p in files)
    for token in lab.tokens.values():
        secret = token.split("_", 2)[2]
        assert secret.encode() not in contents


async def test_rest_calls_go_through_the_same_checks(tmp_path: Path) -> None:
    async with (
        auth_lab(tmp_path) as lab,
        greeted(lab.url, AGENT, agent_hello("pi-1", ("kiln-air", "balance"), lab.tokens["pi-1"])),
        aiohttp.ClientSession() as session,
    ):

        async def get(path: str, who: str | None) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {lab.tokens[who]}"} if who else {}
            async with session.get(lab.url + path, headers=headers) as response:
                return response.status, await response.json(content_type=None)

        assert (await get("/api/health", None))[0] == 200
        status, body = await get("/api/instruments", None)
        assert (status, body["code"]) == (401, "unauthorized")
        status, body = await get("/api/instruments", "olga")
        assert [r["id"] for r in body] == ["kiln-air"]
        status, body = await get("/api/agents", "olga")
        assert body[0]["instruments"] == ["kiln-air"]
        assert (await get("/api/log", "vic"))[0] == 403
        assert (await get("/api/log?instrument=balance", "olga"))[0] == 403
        assert (await get("/api/log?instrument=kiln-air", "olga"))[0] == 200
        assert (await get("/api/log?kind=command", "ada"))[0] == 200
        assert (await get("/api/instruments", "pi-1"))[0] == 403
        async with session.delete(
            lab.url + "/api/instruments/kiln-air",
            headers={"Authorization": f"Bearer {lab.tokens['oscar']}"},
        ) as response:
            assert response.status == 403


async def test_commands_and_refusals_are_audited_with_the_person(tmp_path: Path) -> None:
    async with (
        auth_lab(tmp_path) as lab,
        greeted(lab.url, AGENT, agent_hello("pi-1", ("kiln-air",), lab.tokens["pi-1"])) as agent,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["oscar"], name="notebook")) as oscar,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["vic"])) as vic,
    ):
        await oscar.send(
            {
                "type": "command",
                "id": "1",
                "instrument": "kiln-air",
                "name": "set_setpoint",
                "args": {"value": 80},
            }
        )
        forwarded = await agent.receive_type("command")
        await agent.send({"type": "reply", "id": forwarded["id"], "ok": True, "result": 80})
        await oscar.receive_type("reply")
        await command(vic, "2", "kiln-air", "tare")
        await lab.hub.hub.store.flush()
        entries = await lab.hub.hub.store.query(types=("command", "reply"), limit=50)
        asked = [e for e in entries if e.type == "command" and e.direction == "in"]
        assert len(asked) == 1 and asked[0].peer.endswith("/notebook@oscar")
        assert msgspec.json.decode(asked[0].message)["args"] == {"value": 80}
        outcomes = [e for e in entries if e.type == "reply" and e.direction == "out"]
        assert {e.peer.rsplit("@", 1)[1] for e in outcomes} == {"oscar", "vic"}
        refused = await refused_entries(lab.hub)
        assert refused[0].peer.endswith("@vic")
        assert codes(refused) == ["forbidden"]


def test_a_hub_beyond_loopback_without_auth_refuses_to_start(tmp_path: Path) -> None:
    config = HubConfig(host="0.0.0.0", port=0, data_dir=tmp_path / "d")
    with pytest.raises(HubStartError, match="--insecure"):
        create_app(config=config)
    create_app(config=msgspec.structs.replace(config, insecure=True))  # loudly allowed
    SqliteCredentials(tmp_path / "d").add_user("ada", Role.ADMIN)
    create_app(config=config)  # with credentials, auth is on


async def test_an_unauthenticated_socket_is_closed_at_the_handshake_deadline(
    tmp_path: Path,
) -> None:
    from kleinmaelzung.protocol import Timeouts

    async with (
        auth_lab(tmp_path, timeouts=Timeouts(handshake_s=0.5)) as lab,
        socket(lab.url, CLIENT) as silent,
    ):
        started = asyncio.get_running_loop().time()
        _, code = await closed_with(silent, timeout=3.0)
        assert code in (4004, 1006)
        assert asyncio.get_running_loop().time() - started < 2.0


async def test_every_message_after_credentials_are_withdrawn_is_refused(tmp_path: Path) -> None:
    """Between a revocation's reload and the close, nothing a peer sends is acted on."""
    async with (
        auth_lab(tmp_path) as lab,
        greeted(lab.url, AGENT, agent_hello("pi-1", ("kiln-air",), lab.tokens["pi-1"])) as agent,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["oscar"], name="gone")) as oscar,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["ada"])) as admin,
    ):
        hub = lab.hub.hub
        for peer in list(hub.peers):
            if peer.name.endswith("@oscar") or peer.name == "pi-1":
                hub.auth.detach(peer)  # what a reload does first
        for message in AFTER_HELLO[CLIENT]:
            await oscar.send(message)
            answer = await oscar.receive()
            code = answer["error"]["code"] if answer["type"] == "reply" else answer["code"]
            assert code == "unauthorized", message
        await agent.send(data("kiln-air", 1))
        assert (await agent.receive_type("error"))["code"] == "unauthorized"
        assert hub.registry.instruments["kiln-air"].seqs.get("r1", -1) == -1
        await admin.send({"type": "command", "id": "1", "instrument": "kiln-air", "name": "tare"})
        assert (await agent.receive_type("command"))["name"] == "tare"  # oscar's never came
        assert codes(await refused_entries(lab.hub)) == ["unauthorized"] * 5


async def test_an_absurd_seq_is_refused_as_the_first_frame_after_a_hub_restart(
    tmp_path: Path,
) -> None:
    from kleinmaelzung.hub import start_hub

    config = HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "hub-data")
    first = await start_hub(config)
    try:
        async with greeted(first.url, AGENT, agent_hello("pi-1", ("balance",), None)) as agent:
            await agent.send(data("balance", 1, 2, 3))
            assert (await agent.receive_type("ack"))["seqs"] == {"balance": 3}
    finally:
        await first.stop()
    second = await start_hub(config)
    try:
        async with greeted(second.url, AGENT, agent_hello("pi-1", ("balance",), None)) as agent:
            await agent.send(data("balance", 10**15))
            assert (await agent.receive_type("error"))["code"] == "seq_out_of_range"
            await agent.send(data("balance", 4))
            assert (await agent.receive_type("ack"))["seqs"] == {"balance": 4}
    finally:
        await second.stop()


async def test_a_token_that_expires_mid_stream_closes_its_connection(tmp_path: Path) -> None:
    async with auth_lab(tmp_path) as lab:
        _, token = lab.store.create_token(user="vic", expires=time.time() + 1.0)
        async with greeted(lab.url, CLIENT, client_hello(token)) as vic:
            received, code = await closed_with(vic, timeout=3.0)
        assert code == 4001
        assert "expired" in received[-1]["message"]


async def test_a_refused_handshake_is_one_line_in_the_hubs_log_without_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with auth_lab(tmp_path) as lab:
        async with socket(lab.url, CLIENT) as peer:
            await peer.send(client_hello(lab.tokens["revoked"]))
            await closed_with(peer)
        lines = [r for r in caplog.records if r.getMessage() == "credentials refused"]
        assert len(lines) == 1
        assert lines[0].__dict__["remote"].startswith("127.0.0.1:")
        assert "revoked" in lines[0].__dict__["reason"]
        assert lab.tokens["revoked"].split("_", 2)[2] not in caplog.text
