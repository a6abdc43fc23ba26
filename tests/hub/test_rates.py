"""Messages per second per user (issue 11, item 5): one bucket over all of a user's connections."""

from __future__ import annotations

from kleinmaelzung.hub.rates import UserRates, user_of
from kleinmaelzung.protocol import Limits


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
