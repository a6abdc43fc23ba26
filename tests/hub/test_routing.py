"""The hub routes data to exactly the subscribed clients and commands back to the asker."""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
import pytest

from kleinmaelzung.hub import RunningHub

from .peers import data, instrument, raw_agent, raw_client


async def test_data_reaches_only_subscribers_in_order(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi-1", [instrument("kiln-air"), instrument("balance")]) as agent,
        raw_client(hub.url, "watcher") as subscribed,
        raw_client(hub.url, "bystander") as other,
    ):
        await subscribed.send({"type": "subscribe", "id": "s1", "patterns": ["kiln-*"]})
        answer = await subscribed.receive_type("subscribed")
        assert answer == {
            "type": "subscribed",
            "id": "s1",
            "patterns": ["kiln-*"],
            "instruments": ["kiln-air"],
            "recovered": None,
            "not_recovered": [],
        }
        status = await subscribed.receive_type("status")
        assert (status["instrument"], status["state"]) == ("kiln-air", "online")
        await other.send({"type": "subscribe", "id": "s1", "patterns": ["nothing-*"]})
        await other.receive_type("subscribed")

        for seq in range(5):
            await agent.send(data("kiln-air", seq))
            await agent.send(data("balance", seq))
        received = []
        while len(received) < 5:
            message = await subscribed.receive_type("data")
            received.extend(message["samples"])
        assert [(s["instrument"], s["seq"]) for s in received] == [
            ("kiln-air", i) for i in range(5)
        ]
        with pytest.raises(asyncio.TimeoutError):
            await other.receive_type("data", timeout=0.3)


async def test_mixed_batch_is_split_per_subscriber(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi-1", [instrument("kiln-air"), instrument("balance")]) as agent,
        raw_client(hub.url) as kiln_only,
        raw_client(hub.url) as everything,
    ):
        await kiln_only.send({"type": "subscribe", "id": "1", "patterns": ["kiln-air"]})
        await kiln_only.receive_type("subscribed")
        await everything.send({"type": "subscribe", "id": "1", "patterns": ["*"]})
        await everything.receive_type("subscribed")
        batch = data("kiln-air", 0, 1)
        batch["samples"] += data("balance", 0)["samples"]  # type: ignore[operator]
        await agent.send(batch)
        got = (await kiln_only.receive_type("data"))["samples"]
        assert [s["instrument"] for s in got] == ["kiln-air", "kiln-air"]
        got = (await everything.receive_type("data"))["samples"]
        assert [s["instrument"] for s in got] == ["kiln-air", "kiln-air", "balance"]


async def test_wildcard_subscription_picks_up_instruments_that_appear_later(
    hub: RunningHub,
) -> None:
    async with raw_client(hub.url) as client:
        await client.send({"type": "subscribe", "id": "1", "patterns": ["kiln-*"]})
        assert (await client.receive_type("subscribed"))["instruments"] == []
        async with raw_agent(hub.url, "pi-1", [instrument("kiln-air")]) as agent:
            status = await client.receive_type("status")
            assert (status["instrument"], status["state"]) == ("kiln-air", "online")
            await agent.send(data("kiln-air", 0))
            assert (await client.receive_type("data"))["samples"][0]["seq"] == 0
        status = await client.receive_type("status")
        assert (status["instrument"], status["state"]) == ("kiln-air", "offline")
        assert status["reason"] == "agent disconnected"


async def test_command_round_trip_goes_to_asker_only(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi-1", [instrument("balance", ("tare", "zero"))]) as agent,
        raw_client(hub.url) as asker,
        raw_client(hub.url) as other,
    ):
        await other.send({"type": "subscribe", "id": "1", "patterns": ["*"]})
        await other.receive_type("subscribed")
        await asker.send(
            {"type": "command", "id": "42", "instrument": "balance", "name": "tare", "args": {}}
        )
        forwarded = await agent.receive_type("command")
        assert forwarded["name"] == "tare" and forwarded["instrument"] == "balance"
        await agent.send(
            {"type": "reply", "id": forwarded["id"], "ok": True, "result": {"tare": 12.5}}
        )
        reply = await asker.receive_type("reply")
        assert reply == {
            "type": "reply",
            "id": "42",
            "ok": True,
            "result": {"tare": 12.5},
            "error": None,
        }
        with pytest.raises(asyncio.TimeoutError):
            await other.receive_type("reply", timeout=0.3)


async def test_command_errors_have_distinct_codes(hub: RunningHub) -> None:
    async with raw_client(hub.url) as client:
        await client.send({"type": "command", "id": "1", "instrument": "ghost", "name": "tare"})
        reply = await client.receive_type("reply")
        assert (reply["ok"], reply["error"]["code"]) == (False, "unknown_instrument")

        async with raw_agent(hub.url, "pi-1", [instrument("balance")]) as agent:
            await client.send(
                {"type": "command", "id": "2", "instrument": "balance", "name": "explode"}
            )
            reply = await client.receive_type("reply")
            assert reply["error"]["code"] == "unknown_command"
            assert "tare" in reply["error"]["message"]

            await client.send(
                {
                    "type": "command",
                    "id": "3",
                    "instrument": "balance",
                    "name": "tare",
                    "timeout_s": 0.2,
                }
            )
            await agent.receive_type("command")  # the agent never answers
            reply = await client.receive_type("reply", timeout=5)
            assert (reply["id"], reply["error"]["code"]) == ("3", "outcome_unknown")

            await client.send(
                {
                    "type": "command",
                    "id": "4",
                    "instrument": "balance",
                    "name": "tare",
                    "timeout_s": 0.5,
                }
            )
            forwarded = await agent.receive_type("command")
            assert forwarded["deadline"] > 0
        # The agent left with command 4 in flight: it may still run it until
        # its deadline, so the hub answers then, and never "failed".
        reply = await client.receive_type("reply", timeout=5)
        assert (reply["id"], reply["error"]["code"]) == ("4", "outcome_unknown")
        assert "went away" in reply["error"]["message"]

        await client.send({"type": "command", "id": "5", "instrument": "balance", "name": "tare"})
        reply = await client.receive_type("reply")
        assert (reply["id"], reply["error"]["code"]) == ("5", "instrument_offline")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ('{"type": "launch_rocket", "id": "9"}', "unknown_type"),
        ('{"type": "subscribe", "id": "9", "patterns": ["Kiln AIR"]}', "invalid_message"),
        ('{"type": "subscribe", "id": "9"}', "invalid_message"),
        ("[]", "invalid_message"),
        ('{"type": "data", "samples": []}', "unknown_type"),
    ],
)
async def test_bad_client_input_gets_error_and_connection_survives(
    hub: RunningHub, frame: str, code: str
) -> None:
    async with raw_client(hub.url) as client:
        await client.send(frame)
        error = await client.receive_type("error")
        assert error["code"] == code
        await client.send({"type": "list_instruments", "id": "after"})
        assert (await client.receive_type("instrument_list"))["id"] == "after"


async def test_bad_agent_input_gets_error_and_connection_survives(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi-1", [instrument("balance")]) as agent,
        raw_client(hub.url) as client,
    ):
        await client.send({"type": "subscribe", "id": "1", "patterns": ["balance"]})
        await client.receive_type("subscribed")
        await agent.send('{"type": "data", "samples": [{"instrument": "balance"}]}')
        error = await agent.receive_type("error")
        assert error["code"] == "invalid_message"
        assert "seq" in error["message"]
        await agent.send(data("intruder", 0))
        assert (await agent.receive_type("error"))["code"] == "unknown_instrument"
        await agent.send(data("balance", 0))
        assert (await client.receive_type("data"))["samples"][0]["instrument"] == "balance"


async def test_handshake_refusals_close_with_codes(hub: RunningHub) -> None:
    async with aiohttp.ClientSession() as session:
        ws_url = hub.url.replace("http", "ws") + "/ws/client"
        async with session.ws_connect(ws_url) as ws:
            await ws.send_str('{"type": "subscribe", "id": "1", "patterns": ["*"]}')
            error = await ws.receive_json(timeout=5)
            assert error["code"] == "hello_expected"
            closing = await ws.receive(timeout=5)
            assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4000
        async with session.ws_connect(ws_url) as ws:
            await ws.send_str('{"type": "client_hello", "protocol": 99}')
            error = await ws.receive_json(timeout=5)
            assert error["code"] == "unsupported_protocol"
            closing = await ws.receive(timeout=5)
            assert closing.data == 4002


async def test_resent_samples_are_logged_once_and_acknowledged(hub: RunningHub) -> None:
    async with raw_agent(hub.url, "pi-1", [instrument("balance")], run="run-a") as agent:
        await agent.send(data("balance", 0, 1, 2))
        ack = await agent.receive_type("ack")
        assert ack["seqs"] == {"balance": 2}
    async with raw_agent(hub.url, "pi-1", [instrument("balance")], run="run-a") as agent:
        await agent.send(data("balance", 1, 2, 3))  # resend of 1 and 2 after a reconnect
        seqs: dict[str, int] = {}
        while seqs.get("balance") != 3:
            seqs = (await agent.receive_type("ack"))["seqs"]
    await hub.hub.store.flush()
    entries = await hub.hub.store.query(instrument="balance", limit=100)
    logged = [
        s["seq"]
        for e in entries
        if e.direction == "in" and e.type == "data"
        for s in msgspec.json.decode(e.message)["samples"]
    ]
    assert sorted(logged) == [0, 1, 2, 3]
