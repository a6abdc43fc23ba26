"""The fault tests' own tools: the checker finds each kind of fault; the proxy makes them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from .delivery_check import (
    HubLog,
    LoggedFrame,
    LoggedGap,
    Received,
    SpoolContents,
    check_client,
    check_delivery,
    percentile,
    ranges,
)
from .fault_proxy import FaultProxy

DEADLINE_S = 5.0


def frame(run: str, *seqs: int, instrument: str = "t", backlog: bool = False) -> LoggedFrame:
    return LoggedFrame(0, run, backlog, tuple((instrument, s, float(s)) for s in seqs))


def test_a_clean_log_is_all_ok_across_connection_runs() -> None:
    # Run a.1's backlog comes after a.2's live samples: two streams, each in order.
    log = HubLog([frame("a.1", 0, 1, 2), frame("a.2", 5, 6), frame("a.1", 3, 4, backlog=True)])
    verdicts = check_delivery(log)
    assert verdicts.figures() == {
        "produced": 7,
        "ok": 7,
        "lost": 0,
        "duplicated": 0,
        "out_of_order": 0,
        "dropped": 0,
        "pending": 0,
    }


def test_each_fault_gets_its_verdict() -> None:
    log = HubLog(
        [frame("a.1", 0, 1, 3, 2), frame("a.2", 4, 4, 7), frame("b.1", 0, instrument="u")],
        gaps=[LoggedGap("t", "a.2", 8, 9, 2)],
    )
    spool = SpoolContents(samples={("a", "t", 11): 0.0})
    verdicts = check_delivery(log, spool=spool, spooled=[("a", "t", 12)])
    assert verdicts.by_key[("a", "t", 2)] == "out_of_order"
    assert verdicts.by_key[("a", "t", 4)] == "duplicated"
    assert verdicts.keys("lost") == [("a", "t", 5), ("a", "t", 6), ("a", "t", 10), ("a", "t", 12)]
    assert verdicts.keys("dropped") == [("a", "t", 8), ("a", "t", 9)]
    assert verdicts.keys("pending") == [("a", "t", 11)]
    assert verdicts.by_key[("b", "u", 0)] == "ok"
    assert not verdicts.wrong_gaps
    assert ranges(verdicts.keys("lost")) == ["a/t:5..6", "a/t:10", "a/t:12"]


def test_a_gap_that_miscounts_or_names_a_logged_sample_is_reported() -> None:
    log = HubLog([frame("a.1", 0, 1, 2)], gaps=[LoggedGap("t", "a.1", 2, 4, 3)])
    verdicts = check_delivery(log)
    assert verdicts.wrong_gaps == [(LoggedGap("t", "a.1", 2, 4, 3), 2)]
    assert verdicts.gapped_but_logged == [("a", "t", 2)]


def test_a_client_that_gets_a_sample_twice_or_late_is_caught() -> None:
    def got(run: str, seq: int) -> Received:
        return Received(run, "t", seq, float(seq), float(seq) + 0.01)

    log = HubLog([frame("a.1", 0, 1, 2), frame("a.2", 3, 4)])
    received = [got("a.1", 0), got("a.1", 2), got("a.2", 2), got("a.1", 1), got("a.2", 4)]
    verdicts = check_client([*received, got("a.2", 9)], log)
    assert verdicts.duplicated == [("a", "t", 2)]
    assert verdicts.out_of_order == [("a", "t", 1)]
    assert verdicts.not_logged == [("a", "t", 9)]
    assert percentile([0.1, 0.2, 0.3, 0.4], 0.5) == 0.2
    assert percentile([float(n) for n in range(1, 101)], 0.99) == 99.0


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_the_proxy_passes_delays_blackholes_and_resets() -> None:
    async with echo_server() as port, FaultProxy(port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"one")
        assert await asyncio.wait_for(reader.readexactly(3), DEADLINE_S) == b"one"

        proxy.delay(0.3)
        started = time.monotonic()
        writer.write(b"two")
        assert await asyncio.wait_for(reader.readexactly(3), DEADLINE_S) == b"two"
        assert time.monotonic() - started >= 0.55  # both ways

        proxy.blackhole()
        writer.write(b"three")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(5), 0.5)
        proxy.pass_through()  # healed: what waited flows on
        assert await asyncio.wait_for(reader.readexactly(5), DEADLINE_S) == b"three"

        await proxy.reset()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), DEADLINE_S)
        writer.close()

        proxy.refuse(True)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), DEADLINE_S)
        writer.close()
