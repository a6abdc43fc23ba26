"""Messages per second per user, over all of the user's connections at once.

Each connection is paced by the protocol's own token bucket
(`Limits.client_messages_per_s`); this adds one bucket per user, so that
opening twenty connections does not give a user twenty times the rate. A
connection without a user (a hub without auth) is its own user. The buckets
are bounded in number: the least recently used goes first, which at worst
gives an attacker with more users than that a fresh burst.
"""

from __future__ import annotations

from collections import OrderedDict

from ..protocol import Limits

#: Users whose buckets are kept at once.
MAX_USERS = 4096


class UserRates:
    """One token bucket per user, refilled at `Limits.user_messages_per_s`."""

    def __init__(self, limits: Limits, max_users: int = MAX_USERS) -> None:
        self.per_s = limits.user_messages_per_s
        self.burst = float(limits.user_burst_messages)
        self._max_users = max_users
        #: user -> (tokens, when they were counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        #: Messages refused since the hub started, by user.
        self.refused: dict[str, int] = {}

    def take(self, user: str, now: float) -> bool:
        """Count one message of `user` at `now` (monotonic s); False if over the user's rate."""
        tokens, then = self._buckets.pop(user, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.per_s)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        else:
            self.refused[user] = self.refused.get(user, 0) + 1
            if len(self.refused) > self._max_users:
                self.refused.pop(next(iter(self.refused)))
        self._buckets[user] = (tokens, now)
        if len(self._buckets) > self._max_users:
            self._buckets.popitem(last=False)
        return allowed

    def message(self) -> str:
        """The words of a `rate_limited` error for a user over the rate."""
        return (
            f"more than {self.per_s:g} messages per second from this user's connections "
            f"together (bursts of {self.burst:g}); frames are dropped until the rate falls"
        )


def user_of(peer_name: str) -> str:
    """The user a peer's name carries (`client-...@olga`), else the peer itself."""
    _, at, user = peer_name.rpartition("@")
    return user if at else peer_name
