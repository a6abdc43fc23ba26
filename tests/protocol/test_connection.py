"""The handshake and pending-command rules of the connection state machines."""

from __future__ import annotations

import pytest

from kleinmaelzung.protocol import (
    AgentHello,
    CloseCode,
    Command,
    ErrorCode,
    HandshakeError,
    Limits,
    Received,
    Refused,
    State,
    Welcome,
    client_connection,
    encode,
    hub_agent_connection,
    hub_client_connection,
)
from kleinmaelzung.protocol import Error as ErrorMessage

HELLO = b'{"type": "client_hello", "protocol": 1}'


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
    result = hub_client_connection().receive(b'{"type": "client_hello", "protocol": 2}')
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


def test_peer_raises_handshake_error_when_refused() -> None:
    connection = client_connection()
    refusal = encode(ErrorMessage(code="unsupported_protocol", message="no"))
    with pytest.raises(HandshakeError) as info:
        connection.receive(refusal)
    assert info.value.close_code == CloseCode.UNSUPPORTED_PROTOCOL


def test_peer_opens_on_welcome_and_survives_garbage() -> None:
    connection = client_connection()
    welcome = Welcome(protocol=1, hub="h", session="s", server_time=0.0)
    assert connection.receive(encode(welcome)) == Received(welcome)
    assert isinstance(connection.receive(b"garbage"), Refused)
    assert connection.state is State.OPEN


def test_agent_hello_round_trips_through_the_hub_machine() -> None:
    hello = AgentHello(protocol=1, agent_id="pi-1", instruments=[])
    connection = hub_agent_connection()
    assert connection.receive(encode(hello)) == Received(hello)
    assert connection.hello == hello


def test_data_with_too_many_samples_is_refused_whole_and_the_connection_stays() -> None:
    connection = hub_agent_connection(Limits(max_samples_per_data=3))
    hello = b'{"type": "agent_hello", "protocol": 1, "agent_id": "pi-1", "instruments": []}'
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
