"""The async client against a real hub, fed by a raw agent: subscriptions and commands."""

from __future__ import annotations

import asyncio

import pytest

from kleinmaelzung.client import Client, CommandError, Sample, Status, Subscription
from kleinmaelzung.hub import RunningHub
from kleinmaelzung.protocol import Missed

from .agent_peer import answer_commands, instrument, publish, raw_agent, raw_client

DEADLINE_S = 5.0
KILN_AND_BALANCE = [instrument("kiln-air"), instrument("balance")]


async def next_sample(subscription: Subscription) -> Sample:
    """The next event, within a deadline, which must be a sample."""
    event = await asyncio.wait_for(anext(subscription), DEADLINE_S)
    assert isinstance(event, Sample), event
    return event


async def test_subscription_gets_matching_samples_in_order(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi", KILN_AND_BALANCE) as agent,
        Client(hub.url, name="t") as client,
    ):
        subscription = await client.subscribe("kiln-*")
        assert subscription.instruments == ["kiln-air"]
        for seq in range(3):
            await publish(agent, "balance", seq)
            await publish(agent, "kiln-air", seq)
        received = [await next_sample(subscription) for _ in range(3)]
        assert [(s.instrument, s.seq) for s in received] == [("kiln-air", i) for i in range(3)]


async def test_iterating_without_await_subscribes_on_first_use(hub: RunningHub) -> None:
    async with raw_agent(hub.url, "pi", KILN_AND_BALANCE) as agent, Client(hub.url) as client:
        got: list[Sample | Status] = []

        async def consume() -> None:
            async for event in client.subscribe("balance"):
                got.append(event)
                return

        consumer = asyncio.create_task(consume())
        seq = 0
        while not consumer.done():  # publish until the lazy subscription has caught one
            await publish(agent, "balance", seq)
            seq += 1
            await asyncio.wait([consumer], timeout=0.05)
        await consumer
        assert isinstance(got[0], Sample) and got[0].instrument == "balance"


async def test_a_client_without_subscription_gets_no_data(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi", KILN_AND_BALANCE) as agent,
        raw_client(hub.url, "idle") as idle,
        Client(hub.url) as client,
    ):
        subscription = await client.subscribe("*")
        await publish(agent, "kiln-air", 0)
        assert (await asyncio.wait_for(anext(subscription), DEADLINE_S)).instrument == "kiln-air"
        # The hub keeps each peer's frames in order: data routed to the idle
        # client would arrive before the answer to a request sent now.
        await idle.send({"type": "list_instruments", "id": "1"})
        assert (await idle.receive())["type"] == "instrument_list"


async def test_two_subscriptions_on_one_connection_each_get_their_own(hub: RunningHub) -> None:
    async with raw_agent(hub.url, "pi", KILN_AND_BALANCE) as agent, Client(hub.url) as client:
        kiln = await client.subscribe("kiln-air")
        everything = await client.subscribe("*")
        await publish(agent, "balance", 0)
        await publish(agent, "kiln-air", 0)
        assert (await asyncio.wait_for(anext(kiln), DEADLINE_S)).instrument == "kiln-air"
        first = await asyncio.wait_for(anext(everything), DEADLINE_S)
        second = await asyncio.wait_for(anext(everything), DEADLINE_S)
        assert [first.instrument, second.instrument] == ["balance", "kiln-air"]
        await kiln.close()
        await publish(agent, "kiln-air", 1)
        assert (await next_sample(everything)).seq == 1


async def test_closing_a_subscription_ends_a_waiting_consumer(hub: RunningHub) -> None:
    async with Client(hub.url) as client:
        subscription = await client.subscribe("kiln-*")

        async def consume() -> list[Sample | Status]:
            return [event async for event in subscription]

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)  # let it start waiting
        await subscription.close()
        assert await asyncio.wait_for(consumer, DEADLINE_S) == []


async def test_a_slow_consumer_misses_the_oldest_and_is_told(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi", KILN_AND_BALANCE) as agent,
        Client(hub.url, queue_events=8) as client,
    ):
        subscription = await client.subscribe("balance", status=True)
        online = await asyncio.wait_for(anext(subscription), DEADLINE_S)
        assert isinstance(online, Status)
        await publish(agent, "balance", *range(40))  # one frame, queued all at once
        seqs: list[int] = []
        missed: list[Missed] = []
        while not seqs or seqs[-1] != 39:
            event = await asyncio.wait_for(anext(subscription), DEADLINE_S)
            if isinstance(event, Missed):
                missed.append(event)
                continue
            assert isinstance(event, Sample)
            seqs.append(event.seq)
        assert seqs == list(range(32, 40))
        assert subscription.missed == 32
        # Told before the samples after the hole, with exactly which.
        assert [(m.first_seq, m.last_seq, m.count) for m in missed] == [(0, 31, 32)]


async def test_status_events_when_the_agent_leaves(hub: RunningHub) -> None:
    async with Client(hub.url) as client:
        async with raw_agent(hub.url, "pi", [instrument("balance")]):
            events = await client.subscribe("balance", status=True)
            online = await asyncio.wait_for(anext(events), DEADLINE_S)
            assert isinstance(online, Status) and online.state == "online"
        offline = await asyncio.wait_for(anext(events), DEADLINE_S)
        assert isinstance(offline, Status)
        assert (offline.state, offline.reason) == ("offline", "agent disconnected")


async def test_bad_patterns_are_refused_before_sending(hub: RunningHub) -> None:
    async with Client(hub.url) as client:
        with pytest.raises(ValueError, match="'Kiln'"):
            client.subscribe("Kiln")
        with pytest.raises(ValueError, match="at least one"):
            client.subscribe()


async def test_commands_and_their_errors(hub: RunningHub) -> None:
    async with (
        raw_agent(hub.url, "pi", [instrument("balance", ("tare", "zero", "wait"))]) as agent,
        Client(hub.url) as client,
    ):
        player = asyncio.create_task(answer_commands(agent))
        try:
            assert await client.command("balance", "tare") == {"tare": 1.5}
            with pytest.raises(CommandError) as info:
                await client.command("balance", "zero")
            assert (info.value.code, info.value.message) == ("instrument_error", "not stable")
            assert (info.value.instrument, info.value.name) == ("balance", "zero")
            with pytest.raises(CommandError) as info:
                await client.command("scale", "tare")
            assert info.value.code == "unknown_instrument"
            with pytest.raises(CommandError) as info:
                await client.command("balance", "wait", timeout_s=0.3)
            # The agent never answered: it may have run the command.
            assert info.value.code == "outcome_unknown"
            assert "may have run" in info.value.message
            with pytest.raises(ValueError, match="timeout_s"):
                await client.command("balance", "tare", timeout_s=0)
        finally:
            player.cancel()


async def test_instruments_lists_what_agents_announced(hub: RunningHub) -> None:
    async with raw_agent(hub.url, "pi", KILN_AND_BALANCE), Client(hub.url) as client:
        records = await client.instruments()
        assert sorted((r.id, r.state, r.agent) for r in records) == [
            ("balance", "online", "pi"),
            ("kiln-air", "online", "pi"),
        ]
        assert records[0].channels[0].unit == "g"
