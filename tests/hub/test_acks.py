"""Acks to agents, gathered: spread over the interval, never lower, all on flush."""

from __future__ import annotations

import asyncio

from kleinmaelzung.hub.acks import AckGatherer

INTERVAL_S = 0.25


class _Sent:
    """What the gatherer sent, with the loop's time of each."""

    def __init__(self) -> None:
        self.acks: list[tuple[float, str, dict[str, int]]] = []
        self.changed = asyncio.Event()

    def __call__(self, key: str, seqs: dict[str, int]) -> None:
        self.acks.append((asyncio.get_running_loop().time(), key, dict(seqs)))
        self.changed.set()

    async def until(self, count: int, timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.acks) < count:
                self.changed.clear()
                await self.changed.wait()


def _commit_of(agents: int, seq: int) -> dict[str, dict[str, int]]:
    return {f"agent-{i}/run": {f"i{i}": seq} for i in range(agents)}


def _most_in_any_window(times: list[float], width: float) -> int:
    times = sorted(times)
    most = start = 0
    for end, t in enumerate(times):
        while t - times[start] > width:
            start += 1
        most = max(most, end - start + 1)
    return most


async def _assert_spread(sent: _Sent, since: int, committed_at: float, agents: int) -> None:
    await sent.until(since + agents)
    times = [t for t, _, _ in sent.acks[since:]]
    # Each within an interval of its commit (and a slot's tick of lateness).
    assert max(times) - committed_at <= INTERVAL_S * 1.2
    # Spread: a tenth of the interval holds about a tenth of them (20), not all.
    assert _most_in_any_window(times, INTERVAL_S / 10) <= agents // 5


async def test_the_acks_of_one_commit_leave_spread_over_the_interval() -> None:
    # One commit names 200 agents: their 200 Acks must not leave in one
    # burst (a sample behind it waits), as they did with a timer per agent.
    sent = _Sent()
    gatherer = AckGatherer(sent, interval_s=INTERVAL_S)
    committed_at = asyncio.get_running_loop().time()
    gatherer.committed(_commit_of(200, 7))
    await _assert_spread(sent, 0, committed_at, 200)
    assert {key for _, key, _ in sent.acks} == {f"agent-{i}/run" for i in range(200)}
    assert all(seqs == {key.split("/")[0].replace("agent-", "i"): 7} for _, key, seqs in sent.acks)


async def test_after_a_quiet_spell_the_acks_are_spread_again() -> None:
    sent = _Sent()
    gatherer = AckGatherer(sent, interval_s=INTERVAL_S)
    gatherer.committed(_commit_of(200, 1))
    await sent.until(200)
    # Nothing pending for two intervals: no slot owes anything meanwhile.
    quiet = asyncio.Event()
    asyncio.get_running_loop().call_later(INTERVAL_S * 2, quiet.set)
    await quiet.wait()
    committed_at = asyncio.get_running_loop().time()
    gatherer.committed(_commit_of(200, 2))
    await _assert_spread(sent, 200, committed_at, 200)


async def test_an_ack_merges_commits_and_never_names_a_lower_seq() -> None:
    sent = _Sent()
    gatherer = AckGatherer(sent, interval_s=INTERVAL_S)
    gatherer.committed({"a/r": {"x": 5, "y": 1}})
    gatherer.committed({"a/r": {"x": 3, "y": 2}})
    await sent.until(1)
    assert sent.acks[0][1:] == ("a/r", {"x": 5, "y": 2})
    gatherer.committed({"a/r": {"x": 4}})  # lower than sent: nothing to send
    gatherer.committed({"a/r": {"y": 2}})  # equal: sent again, the agent may have missed it
    await sent.until(2)
    assert sent.acks[1][1:] == ("a/r", {"y": 2})


async def test_flush_sends_everything_pending_at_once() -> None:
    sent = _Sent()
    gatherer = AckGatherer(sent, interval_s=10.0)
    gatherer.committed(_commit_of(50, 3))
    gatherer.flush()
    assert len(sent.acks) == 50
    gatherer.committed(_commit_of(50, 3))  # equal seqs: pending again, then flushed
    gatherer.flush()
    assert len(sent.acks) == 100
