"""The handshake, outbound and pending-command rules of the connection state machines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kleinmaelzung.protocol import (
    Ack,
    AgentHello,
    ClientHello,
    CloseCode,
    Command,
    Data,
    ErrorCode,
    Limits,
    ListInstruments,
    PeerConnection,
    Received,
    Refused,
    Reply,
    Sample,
    State,
    Status,
    Subscribe,
    Subscribed,
    Welcome,
    agent_connection,
    client_connection,
    encode,
    hub_agent_connection,
    hub_client_connection,
)
from kleinmaelzung.protocol import Error as ErrorMessage

HELLO = b'{"type": "client_hello", "protocol": 3}'
CLIENT_HELLO = ClientHello(protocol=3)
AGENT_HELLO = AgentHello(protocol=3, agent_id="pi-1", instruments=[], run="r1")
WELCOME = Welcome(protocol=3, hub="h", session="s", server_time=0.0)


def command(id_: str) -> bytes:
    return encode(Command(id=id_, instrument="balance", name="tare"))


def test_hub_requires_hello_first_and_closes_otherwise() -> None:
    connection = hub_client_connection()
    result = connection.receive(b'{"type": "list_instruments", "id": "1"}')
    assert isinstance(result, Refused)
    assert (result.error.code, result.close) == (ErrorCode.HELLO_EXPECTED, CloseCode.HELLO_EXPECTED)
    assert connection.state is State.CLOSED


def test_agent_endpoint_refuses_a_client_hello() -> None:
    result = hub_agent_connection().receive(HELLO)
    assert isinstance(result, Refused)
    assert result.close == CloseCode.HELLO_EXPECTED


def test_unsupported_protocol_closes_with_its_own_code() -> None:
    result = hub_client_connection().receive(b'{"type": "client_hello", "protocol": 1}')
    assert isinstance(result, Refused)
    assert (result.error.code, result.close) == ("unsupported_protocol", 4002)


def test_second_hello_is_refused_but_connection_stays_open() -> None:
    connection = hub_client_connection()
    assert isinstance(connection.receive(HELLO), Received)
    result = connection.receive(HELLO)
    assert isinstance(result, Refused)
    assert result.close is None
    assert connection.state is State.OPEN


def test_pending_command_ids_are_unique_and_bounded() -> None:
    connection = hub_client_connection(Limits(max_pending_commands=2))
    connection.receive(HELLO)
    assert isinstance(connection.receive(command("a")), Received)
    duplicate = connection.receive(command("a"))
    assert isinstance(duplicate, Refused)
    assert (duplicate.error.code, duplicate.error.id) == ("duplicate_id", "a")
    assert isinstance(connection.receive(command("b")), Received)
    full = connection.receive(command("c"))
    assert isinstance(full, Refused)
    assert full.error.code == "too_many_pending"
    connection.complete_command("a")
    assert isinstance(connection.receive(command("a")), Received)


def welcomed_client() -> PeerConnection[Any]:
    connection = client_connection()
    assert isinstance(connection.send(CLIENT_HELLO), bytes)
    assert isinstance(connection.receive(encode(WELCOME)), Received)
    return connection


def test_a_refused_hello_is_a_value_with_the_hubs_error_and_close_code() -> None:
    # The same kind of value as the hub's side reports: nothing raised.
    connection = client_connection()
    connection.send(CLIENT_HELLO)
    refusal = ErrorMessage(code="unsupported_protocol", message="no")
    result = connection.receive(encode(refusal))
    assert result == Refused(refusal, CloseCode.UNSUPPORTED_PROTOCOL)
    assert connection.state is State.CLOSED


def test_anything_but_a_welcome_after_the_hello_closes() -> None:
    connection = client_connection()
    connection.send(CLIENT_HELLO)
    result = connection.receive(
        b'{"type": "subscribed", "id": "1", "patterns": [], "instruments": []}'
    )
    assert isinstance(result, Refused)
    assert (result.error.code, result.close) == ("unexpected_message", CloseCode.HELLO_EXPECTED)
    assert "'subscribed'" in result.error.message
    assert isinstance(client_connection().receive(b"garbage"), Refused)


def test_peer_opens_on_welcome_and_survives_garbage() -> None:
    connection = client_connection()
    assert connection.send(CLIENT_HELLO) == encode(CLIENT_HELLO)
    assert connection.receive(encode(WELCOME)) == Received(WELCOME)
    assert connection.welcome == WELCOME
    assert isinstance(connection.receive(b"garbage"), Refused)
    assert connection.state is State.OPEN


def test_nothing_but_the_hello_goes_out_before_the_welcome() -> None:
    connection = client_connection()
    early = connection.send(ListInstruments(id="1"))
    assert isinstance(early, Refused)
    assert early.error.code == "hello_expected" and early.close is None
    assert "'client_hello'" in early.error.message and "'list_instruments'" in early.error.message
    assert isinstance(connection.send(CLIENT_HELLO), bytes)
    again = connection.send(CLIENT_HELLO)
    assert isinstance(again, Refused) and "already sent" in again.error.message
    assert isinstance(connection.send(ListInstruments(id="1")), Refused)  # still no welcome


@pytest.mark.parametrize(
    ("connection", "hello", "foreign"),
    [
        (agent_connection, AGENT_HELLO, Subscribe(id="1", patterns=["*"])),
        (agent_connection, AGENT_HELLO, Command(id="1", instrument="kiln", name="stop")),
        (client_connection, CLIENT_HELLO, Data(samples=[])),
        (client_connection, CLIENT_HELLO, Reply(id="1", ok=True)),
    ],
)
def test_each_side_sends_only_its_own_messages(
    connection: Callable[[], PeerConnection[Any]], hello: object, foreign: object
) -> None:
    peer = connection()
    peer.send(hello)
    peer.receive(encode(WELCOME))
    refused = peer.send(foreign)
    assert isinstance(refused, Refused)
    assert refused.error.code == "unexpected_message"
    assert f"a{'n' if peer.kind == 'agent' else ''} {peer.kind} sends" in refused.error.message
    assert peer.state is State.OPEN  # our bug: nothing is sent, nothing is closed


def test_a_hello_of_the_other_side_is_refused() -> None:
    refused = agent_connection().send(CLIENT_HELLO)
    assert isinstance(refused, Refused) and refused.error.code == "hello_expected"


def test_outbound_messages_stay_within_the_hubs_limits() -> None:
    connection = agent_connection(Limits(max_samples_per_data=2, max_message_bytes=300))
    connection.send(AGENT_HELLO)
    connection.receive(encode(WELCOME))

    def data(n: int) -> Data:
        return Data(
            samples=[Sample(instrument="t", seq=i, ts=1.0, values={"x": 1}) for i in range(n)]
        )

    assert isinstance(connection.send(data(2)), bytes)
    too_many = connection.send(data(3))
    assert isinstance(too_many, Refused) and too_many.error.code == "message_too_large"
    too_big = connection.send(Status(instrument="t", state="faulted", ts=1.0, reason="x" * 400))
    assert isinstance(too_big, Refused) and too_big.error.code == "message_too_large"
    assert "at most 300" in too_big.error.message


def test_nothing_goes_out_once_closed() -> None:
    connection = welcomed_client()
    connection.close()
    refused = connection.send(ListInstruments(id="1"))
    assert isinstance(refused, Refused) and "closed" in refused.error.message
    assert isinstance(connection.receive(encode(WELCOME)), Refused)


def test_agent_hello_round_trips_through_the_hub_machine() -> None:
    hello = AgentHello(protocol=3, agent_id="pi-1", instruments=[], run="r1")
    connection = hub_agent_connection()
    assert connection.receive(encode(hello)) == Received(hello)
    assert connection.hello == hello


def test_data_with_too_many_samples_is_refused_whole_and_the_connection_stays() -> None:
    connection = hub_agent_connection(Limits(max_samples_per_data=3))
    hello = (
        b'{"type": "agent_hello", "protocol": 3, "agent_id": "pi-1", "instruments": [], "run": "r"}'
    )
    assert isinstance(connection.receive(hello), Received)

    def data(n: int) -> bytes:
        samples = ",".join(
            f'{{"instrument": "t", "seq": {i}, "ts": 1.0, "values": {{"x": 1}}}}' for i in range(n)
        )
        return f'{{"type": "data", "samples": [{samples}]}}'.encode()

    assert isinstance(connection.receive(data(3)), Received)
    refused = connection.receive(data(4))
    assert isinstance(refused, Refused)
    assert refused.error.code == "message_too_large"
    assert "at most 3 samples" in refused.error.message and "has 4" in refused.error.message
    assert refused.close is None and connection.state is State.OPEN


def test_the_hub_sends_each_peer_only_its_own_messages() -> None:
    agent = hub_agent_connection()
    client = hub_client_connection()
    command = Command(id="1", instrument="kiln-air", name="tare")
    subscribed = Subscribed(id="1", patterns=[], instruments=[])
    assert agent.check_send(command) is None
    assert client.check_send(subscribed) is None
    refused = agent.check_send(subscribed)
    assert refused is not None and "not a message the hub sends to an agent" in refused.message
    assert client.check_send(Ack(seqs={})) is not None
    client.close()
    closed = client.check_send(subscribed)
    assert closed is not None and closed.message == "the connection is closed"
