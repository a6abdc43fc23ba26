"""Control across hubs on a bus (issue 16): the holding hub's lease, and commands of a lost hub.

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
