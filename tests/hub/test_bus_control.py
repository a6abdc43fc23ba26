"""Control across hubs on a bus (issue 16): the holding hub's lease, which follows its agent
to another hub, and commands of a lost hub.

Two hubs in one process on a `LocalBus`, each requiring tokens, with the same
users (`auth_setup.make_credentials`); raw agent and clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.hub import HubConfig
from kleinmaelzung.hub.app import RunningHub, start_hub
from kleinmaelzung.hub.auth.leases import Lease, Leases
from kleinmaelzung.hub.bus import LocalBroker, LocalBus

from .auth_setup import agent_hello, client_hello, greeted, make_credentials
from .peers import RawPeer

DEADLINE_S = 10.0


@pytest.fixture
async def hubs(tmp_path: Path) -> AsyncIterator[list[tuple[RunningHub, dict[str, str]]]]:
    broker = LocalBroker()
    started: list[tuple[RunningHub, dict[str, str]]] = []
    stores = []
    try:
        for name in ("a", "b"):
            data = tmp_path / name
            store, tokens = make_credentials(data)
            stores.append(store)
            config = HubConfig(host="127.0.0.1", port=0, data_dir=data, name=f"hub-{name}")
            started.append((await start_hub(config, bus=LocalBus(broker)), tokens))
        yield started
    finally:
        for hub, _ in started:
            await hub.stop()
        for store in stores:
            store.close()


async def command(
    peer: RawPeer, id_: str, name: str, timeout_s: float = 5.0, **args: Any
) -> dict[str, Any]:
    # The command's own deadline is a field beside `args`: inside them, an
    # instrument that takes none answers `invalid_arguments` and no agent sees
    # the command (the hub_lost test below was xfail for that reason alone).
    message = {
        "type": "command",
        "id": id_,
        "instrument": "kiln-air",
        "name": name,
        "args": args,
        "timeout_s": timeout_s,
    }
    await peer.send(message)
    while True:
        reply = await peer.receive_type("reply")
        if reply["id"] == id_:
            return reply


async def test_a_lease_on_hub_a_holds_against_an_operator_on_hub_b(
    hubs: list[tuple[RunningHub, dict[str, str]]],
) -> None:
    (a, on_a), (b, on_b) = hubs
    async with AsyncExitStack() as stack:
        oscar_a = await stack.enter_async_context(
            greeted(a.url, "/ws/client", client_hello(on_a["oscar"], "oscar-a"))
        )
        otto_b = await stack.enter_async_context(
            greeted(b.url, "/ws/client", client_hello(on_b["otto"], "otto-b"))
        )
        oscar_b = await stack.enter_async_context(
            greeted(b.url, "/ws/client", client_hello(on_b["oscar"], "oscar-b"))
        )
        # Watching before the agent comes: its instrument's status arrives.
        await otto_b.send({"type": "subscribe", "id": "s", "patterns": ["kiln-*"]})
        await otto_b.receive_type("subscribed")
        agent = await stack.enter_async_context(
            greeted(a.url, "/ws/agent", agent_hello("pi-1", ("kiln-air",), on_a["pi-1"]))
        )
        async with asyncio.timeout(DEADLINE_S):
            while (await otto_b.receive_type("status"))["state"] != "online":
                pass

        leased = await command(oscar_a, "1", "lease", duration_s=60)
        assert leased["ok"] and leased["result"]["holder"] == "oscar", leased
        # Hub B's watchers see who holds it, as hub A's do.
        async with asyncio.timeout(DEADLINE_S):
            while not (status := await otto_b.receive_type("status")).get("lease"):
                pass
        assert status["lease"]["holder"] == "oscar"

        # Another operator on hub B: refused by hub A, which holds the lease.
        refused = await command(otto_b, "2", "tare")
        assert refused["error"]["code"] == "lease_held", refused
        assert "leased by oscar" in refused["error"]["message"]
        taken = await command(otto_b, "3", "lease")
        assert taken["error"]["code"] == "lease_held", taken
        released = await command(otto_b, "4", "release")
        assert released["error"]["code"] == "lease_held", released

        # The holder, on hub B: the command reaches the agent.
        sent = asyncio.create_task(command(oscar_b, "5", "tare"))
        forwarded = await agent.receive_type("command")
        await agent.send({"type": "reply", "id": forwarded["id"], "ok": True, "result": 0})
        assert (await sent)["ok"]
        # ... and gives it back from there; then otto may drive it.
        assert (await command(oscar_b, "6", "release"))["ok"]
        sent = asyncio.create_task(command(otto_b, "7", "tare"))
        forwarded = await agent.receive_type("command")
        await agent.send({"type": "reply", "id": forwarded["id"], "ok": True, "result": 0})
        assert (await sent)["ok"]


async def test_commands_in_flight_through_a_hub_that_leaves_are_answered_at_once(
    hubs: list[tuple[RunningHub, dict[str, str]]],
) -> None:
    (a, on_a), (b, on_b) = hubs
    async with (
        greeted(a.url, "/ws/client", client_hello(on_a["oscar"], "oscar-a")),
        greeted(b.url, "/ws/client", client_hello(on_b["otto"], "otto-b")) as otto_b,
    ):
        await otto_b.send({"type": "subscribe", "id": "s", "patterns": ["kiln-*"]})
        await otto_b.receive_type("subscribed")
        hello = agent_hello("pi-1", ("kiln-air",), on_a["pi-1"])
        async with greeted(a.url, "/ws/agent", hello) as agent:
            await lost_with_a_command_in_flight(a, agent, otto_b)


async def lost_with_a_command_in_flight(a: RunningHub, agent: RawPeer, otto_b: RawPeer) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while (await otto_b.receive_type("status"))["state"] != "online":
            pass
    sent = asyncio.create_task(command(otto_b, "1", "tare", timeout_s=30))
    await agent.receive_type("command")  # the agent has it, and never answers
    started = time.monotonic()
    await a.stop()
    reply = await asyncio.wait_for(sent, DEADLINE_S)
    assert reply["error"]["code"] == "hub_lost", reply
    assert "hub 'hub-a' shut down" in reply["error"]["message"]
    assert "it may have run" in reply["error"]["message"]
    assert time.monotonic() - started < 5.0  # not at the deadline, 30 s away


async def answered(agent: RawPeer, asked: asyncio.Task[dict[str, Any]]) -> dict[str, Any]:
    """The client's reply to a command that reached `agent`, which answers it ok."""
    forwarded = await agent.receive_type("command")
    await agent.send({"type": "reply", "id": forwarded["id"], "ok": True, "result": 0})
    return await asyncio.wait_for(asked, DEADLINE_S)


async def test_a_lease_holds_when_its_agent_fails_over_to_another_hub(
    hubs: list[tuple[RunningHub, dict[str, str]]],
) -> None:
    """olga's lease, taken through hub A, binds on hub B once the agent moved there (A
    shut down), until it expires."""
    (a, on_a), (b, on_b) = hubs
    duration_s = 4.0
    async with AsyncExitStack() as stack:
        olga_a = await stack.enter_async_context(
            greeted(a.url, "/ws/client", client_hello(on_a["olga"], "olga-a"))
        )
        olga_b = await stack.enter_async_context(
            greeted(b.url, "/ws/client", client_hello(on_b["olga"], "olga-b"))
        )
        oscar_b = await stack.enter_async_context(
            greeted(b.url, "/ws/client", client_hello(on_b["oscar"], "oscar-b"))
        )
        await oscar_b.send({"type": "subscribe", "id": "s", "patterns": ["kiln-*"]})
        await oscar_b.receive_type("subscribed")
        hello = agent_hello("pi-1", ("kiln-air",), on_a["pi-1"])
        async with greeted(a.url, "/ws/agent", hello):
            async with asyncio.timeout(DEADLINE_S):
                while (await oscar_b.receive_type("status"))["state"] != "online":
                    pass
            leased = await command(olga_a, "1", "lease", duration_s=duration_s)
            assert leased["ok"] and leased["result"]["holder"] == "olga", leased
            expires = leased["result"]["expires"]
            async with asyncio.timeout(DEADLINE_S):
                while not (await oscar_b.receive_type("status")).get("lease"):
                    pass
            await a.stop()  # hub A goes away; its agent moves to hub B
        hello = agent_hello("pi-1", ("kiln-air",), on_b["pi-1"])
        agent = await stack.enter_async_context(greeted(b.url, "/ws/agent", hello))

        # On hub B, the lease holds: same holder, same expiry.
        refused = await command(oscar_b, "2", "tare")
        assert refused["error"]["code"] == "lease_held", refused
        assert "leased by olga" in refused["error"]["message"]
        taken = await command(oscar_b, "3", "lease")
        assert taken["error"]["code"] == "lease_held", taken
        listed = await instrument_record(oscar_b, "kiln-air")
        assert listed["lease"] == {"holder": "olga", "until": expires}, listed
        # The holder drives it there.
        reply = await answered(
            agent, asyncio.create_task(command(olga_b, "4", "set_setpoint", value=80))
        )
        assert reply["ok"], reply

        # Once it expires, anyone may.
        async with asyncio.timeout(DEADLINE_S + duration_s):
            while (await oscar_b.receive_type("status")).get("lease"):
                pass
        assert time.time() >= expires
        reply = await answered(agent, asyncio.create_task(command(oscar_b, "5", "tare")))
        assert reply["ok"], reply


async def test_a_hub_whose_agent_moved_away_holds_no_lease_for_it(
    hubs: list[tuple[RunningHub, dict[str, str]]],
) -> None:
    """Hub A stays up while its agent moves to hub B: B holds olga's lease (known from A's
    presence alone: nobody on B watches), A keeps none; olga's release on B frees it on A."""
    (a, on_a), (b, on_b) = hubs
    async with AsyncExitStack() as stack:
        olga_a = await stack.enter_async_context(
            greeted(a.url, "/ws/client", client_hello(on_a["olga"], "olga-a"))
        )
        oscar_a = await stack.enter_async_context(
            greeted(a.url, "/ws/client", client_hello(on_a["oscar"], "oscar-a"))
        )
        oscar_b = await stack.enter_async_context(
            greeted(b.url, "/ws/client", client_hello(on_b["oscar"], "oscar-b"))
        )
        hello = agent_hello("pi-1", ("kiln-air",), on_a["pi-1"])
        async with greeted(a.url, "/ws/agent", hello):
            leased = await command(olga_a, "1", "lease", duration_s=600)
            assert leased["ok"], leased
            async with asyncio.timeout(DEADLINE_S):
                while (await instrument_record(oscar_b, "kiln-air")).get("lease") is None:
                    pass  # B's list again: one round trip each, within the deadline
        hello = agent_hello("pi-1", ("kiln-air",), on_b["pi-1"])
        agent = await stack.enter_async_context(greeted(b.url, "/ws/agent", hello))

        refused = await command(oscar_b, "2", "tare")
        assert refused["error"]["code"] == "lease_held", refused
        # Hub A learns that B serves it now (presence), and forwards there.
        async with asyncio.timeout(DEADLINE_S):
            while (await instrument_record(oscar_a, "kiln-air")).get("state") != "online":
                pass
        refused = await command(oscar_a, "3", "tare")
        assert refused["error"]["code"] == "lease_held", refused
        # olga gives it back through hub A (forwarded to B, which holds it) ...
        released = await command(olga_a, "4", "release")
        assert released["ok"], released
        # ... and hub A, which held it first, does not stop oscar with a lease of its own.
        reply = await answered(agent, asyncio.create_task(command(oscar_a, "5", "tare")))
        assert reply["ok"], reply


async def instrument_record(peer: RawPeer, instrument: str) -> dict[str, Any]:
    """The hub's record of `instrument`, as its list gives it to `peer`."""
    await peer.send({"type": "list_instruments", "id": "list"})
    listed = await peer.receive_type("instrument_list")
    return next((i for i in listed["instruments"] if i["id"] == instrument), {})


def test_an_adopted_lease_keeps_its_holder_and_expiry_and_never_revives() -> None:
    leases = Leases()
    adopted = leases.adopt("kiln-air", "olga", 110.0, now=100.0)
    assert adopted == Lease("kiln-air", "olga", 110.0)
    assert leases.permits("kiln-air", "oscar", 105.0) == adopted
    # This hub's own lease wins over one heard of elsewhere.
    assert leases.adopt("kiln-air", "otto", 120.0, now=105.0) is None
    # One that ran out during the failover is not held.
    assert leases.adopt("balance", "olga", 100.0, now=100.0) is None
    assert leases.holder("balance", 100.0) is None
    assert leases.drop("kiln-air") == adopted
    assert leases.holder("kiln-air", 105.0) is None
