"""Messages per second per user (issue 11, item 5): one bucket over all of a user's connections."""

from __future__ import annotations

from pathlib import Path

from kleinmaelzung.hub.rates import UserRates, user_of
from kleinmaelzung.protocol import Limits

from .auth_setup import agent_hello, auth_lab, client_hello, greeted

CLIENT, AGENT = "/ws/client", "/ws/agent"


def test_a_users_connections_share_one_rate() -> None:
    rates = UserRates(Limits(user_messages_per_s=10, user_burst_messages=20))
    # Twenty connections of olga's, one message each: the burst; the next is refused.
    assert all(rates.take("olga", 0.0) for _ in range(20))
    assert not rates.take("olga", 0.0)
    assert rates.take("ada", 0.0)  # another user is not affected
    assert rates.take("olga", 0.1)  # 0.1 s at 10/s: one more
    assert not rates.take("olga", 0.1)
    assert rates.refused == {"olga": 2}
    assert "10 messages per second" in rates.message()


def test_a_burst_returns_after_a_pause_and_the_buckets_are_bounded() -> None:
    rates = UserRates(Limits(user_messages_per_s=100, user_burst_messages=5), max_users=3)
    for _ in range(5):
        assert rates.take("olga", 0.0)
    assert not rates.take("olga", 0.0)
    assert all(rates.take("olga", 10.0) for _ in range(5))  # refilled, never beyond the burst
    assert not rates.take("olga", 10.0)
    for n in range(100):  # many users: memory stays at max_users buckets
        rates.take(f"user-{n}", 11.0)
    assert len(rates._buckets) == 3


def test_the_user_is_read_from_the_peer_name() -> None:
    assert user_of("client-ab12.7@olga") == "olga"
    assert user_of("client-ab12.7") == "client-ab12.7"  # no auth: the connection alone


async def test_a_users_connections_together_are_limited_and_a_command_is_answered(
    tmp_path: Path,
) -> None:
    limits = Limits(user_messages_per_s=1, user_burst_messages=6)
    async with (
        auth_lab(tmp_path, limits=limits) as lab,
        greeted(lab.url, AGENT, agent_hello("pi-1", ("kiln-air",), lab.tokens["pi-1"])),
        greeted(lab.url, CLIENT, client_hello(lab.tokens["oscar"])) as first,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["oscar"])) as second,
        greeted(lab.url, CLIENT, client_hello(lab.tokens["otto"])) as other,
    ):
        # Three lists on each of oscar's connections: his burst of six.
        for peer in (first, second):
            for n in range(3):
                await peer.send({"type": "list_instruments", "id": f"l{n}"})
                await peer.receive_type("instrument_list")
        # Over it: a list is told once, a command is answered that it did not run.
        await first.send({"type": "list_instruments", "id": "over"})
        assert (await first.receive_type("error"))["code"] == "rate_limited"
        await second.send({"type": "command", "id": "c", "instrument": "kiln-air", "name": "tare"})
        reply = await second.receive_type("reply")
        assert (reply["ok"], reply["error"]["code"]) == (False, "rate_limited")
        # Another user is not affected.
        await other.send({"type": "list_instruments", "id": "o"})
        assert (await other.receive_type("instrument_list"))["id"] == "o"
