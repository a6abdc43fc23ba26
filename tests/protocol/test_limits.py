"""Limits the sans-I/O layer enforces: nesting depth, patterns, instruments per hello, message rate.

Each was a way to take memory or time from the hub (issue 11): every breach is
answered with its own code, never a traceback.
"""

from __future__ import annotations

import msgspec
import pytest

from kleinmaelzung.protocol import (
    CloseCode,
    Invalid,
    Limits,
    Received,
    Refused,
    State,
    any_decoder,
    client_decoder,
    hub_agent_connection,
    hub_client_connection,
)

HELLO = b'{"type": "client_hello", "protocol": 3}'


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [1000, 5000, 100_000])
def test_json_nested_too_deep_to_parse_is_a_typed_error(depth: int) -> None:
    # A 2 KB frame once raised RecursionError inside the codec's explanation.
    for frame in (
        nested(depth),
        b'{"type": "command", "id": "1", "instrument": "kiln", "name": "set", "args": {"a": '
        + nested(depth)
        + b"}}",
        b'{"type": "subscribe", "id": "1", "patterns": ' + nested(depth) + b"}",
    ):
        result = client_decoder().decode(frame)
        assert isinstance(result, Invalid), result
        assert result.error.code == "nesting_too_deep", result.error


def test_free_json_deeper_than_the_limit_is_refused_with_the_request_id() -> None:
    limits = Limits(max_nesting_depth=8)
    args = {"a": msgspec.json.decode(nested(8))}  # depth 1 (args) + 8 = 9
    frame = msgspec.json.encode(
        {"type": "command", "id": "c1", "instrument": "kiln", "name": "set", "args": args}
    )
    result = client_decoder(limits).decode(frame)
    assert isinstance(result, Invalid)
    assert (result.error.code, result.error.id) == ("nesting_too_deep", "c1")
    assert "8" in result.error.message
    ok = msgspec.json.encode(
        {"type": "command", "id": "c2", "instrument": "kiln", "name": "set", "args": {"a": [[1]]}}
    )
    assert not isinstance(client_decoder(limits).decode(ok), Invalid)
    reply = b'{"type": "reply", "id": "r", "ok": true, "result": ' + nested(40) + b"}"
    result = any_decoder().decode(reply)
    assert isinstance(result, Invalid) and result.error.code == "nesting_too_deep"


def test_a_client_cannot_hold_more_patterns_than_the_limit() -> None:
    connection = hub_client_connection(Limits(max_subscriptions=3))
    assert isinstance(connection.receive(HELLO), Received)

    def subscribe(id_: str, *patterns: str) -> Received[object] | Refused:
        return connection.receive(
            msgspec.json.encode({"type": "subscribe", "id": id_, "patterns": list(patterns)})
        )

    assert isinstance(subscribe("1", "a", "b"), Received)
    assert isinstance(subscribe("2", "a", "b"), Received)  # already active: no new pattern
    refused = subscribe("3", "c", "d")
    assert isinstance(refused, Refused)
    assert (refused.error.code, refused.error.id, refused.close) == (
        "too_many_subscriptions",
        "3",
        None,
    )
    assert "3" in refused.error.message
    assert isinstance(subscribe("4", "c"), Received)  # the refused ones were not taken
    unsubscribe = b'{"type": "unsubscribe", "id": "5", "patterns": ["a", "zz"]}'
    assert isinstance(connection.receive(unsubscribe), Received)
    assert isinstance(subscribe("6", "d"), Received)
    assert connection.state is State.OPEN


def test_an_agent_announcing_too_many_instruments_is_refused_and_closed() -> None:
    connection = hub_agent_connection(Limits(max_instruments_per_agent=2))
    hello = msgspec.json.encode(
        {
            "type": "agent_hello",
            "protocol": 3,
            "agent_id": "pi-1",
            "run": "r1",
            "instruments": [{"id": f"i{n}", "kind": "k"} for n in range(3)],
        }
    )
    result = connection.receive(hello)
    assert isinstance(result, Refused)
    assert (result.error.code, result.close) == (
        "too_many_instruments",
        CloseCode.TOO_MANY_INSTRUMENTS,
    )
    assert "3" in result.error.message and "2" in result.error.message


def test_a_client_over_its_message_rate_is_told_once_then_closed_if_it_goes_on() -> None:
    limits = Limits(client_messages_per_s=10.0, client_burst_messages=5, rate_limited_close_s=2.0)
    connection = hub_client_connection(limits)
    frame = b'{"type": "list_instruments", "id": "1"}'
    assert isinstance(connection.receive(HELLO, now=0.0), Received)
    results = [connection.receive(frame, now=0.0) for _ in range(20)]
    assert all(isinstance(r, Received) for r in results[:5])
    refused = [r for r in results[5:] if isinstance(r, Refused)]
    assert len(refused) == 15
    assert refused[0].error.code == "rate_limited" and not refused[0].silent
    assert all(r.silent for r in refused[1:])  # answered and logged once, not per frame
    assert connection.rate_refused == 15
    # Under the rate again (0.1 s per message): accepted.
    assert isinstance(connection.receive(frame, now=0.15), Received)
    # Sustained: refusing for longer than rate_limited_close_s closes.
    t = 0.15
    last: Received[object] | Refused | None = None
    while t < 3.0:
        t += 0.001
        last = connection.receive(frame, now=t)
        if isinstance(last, Refused) and last.close is not None:
            break
    assert isinstance(last, Refused)
    assert (last.error.code, last.close) == ("rate_limited", CloseCode.RATE_LIMITED)
    assert 2.0 <= t < 2.5


def test_a_client_that_pauses_after_a_burst_starts_afresh() -> None:
    limits = Limits(client_messages_per_s=10.0, client_burst_messages=5, rate_limited_close_s=1.0)
    connection = hub_client_connection(limits)
    frame = b'{"type": "list_instruments", "id": "1"}'
    connection.receive(HELLO, now=0.0)
    for burst in range(5):
        start = burst * 10.0  # ten seconds apart: the bucket is full again
        results = [connection.receive(frame, now=start) for _ in range(8)]
        refused = [r for r in results if isinstance(r, Refused)]
        assert len(refused) == 3 and not refused[0].silent  # told again each episode
        assert all(r.close is None for r in refused)
