"""Who receives which instrument: the subscription index, and its only writer.

Patterns are resolved when a client subscribes and when an instrument first
appears, never per message: routing a sample is one dict lookup.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Set

from ..protocol import is_literal, matches
from .peers import Peer

_NOBODY: frozenset[Peer] = frozenset()


class Subscriptions:
    """Patterns per peer, and the peers per instrument they resolve to."""

    def __init__(self) -> None:
        self._by_instrument: dict[str, set[Peer]] = defaultdict(set)
        self._patterns: dict[Peer, set[str]] = {}
        self._wildcards: dict[str, set[Peer]] = defaultdict(set)
        # Naming the recipients is per message, while subscriptions change
        # rarely: cached per instrument, cleared on every change.
        self._recipient_names: dict[str, str] = {}
        #: Told when an instrument gains its first subscriber (True) or loses
        #: its last (False): a hub on a bus subscribes there only to what its
        #: clients watch (`federation`). None on a hub alone.
        self.on_interest: Callable[[str, bool], None] | None = None

    def subscribe(self, peer: Peer, patterns: Iterable[str], known: Iterable[str]) -> list[str]:
        """Add patterns for a peer; return the known instruments it now receives."""
        return self.add(peer, patterns, known)[0]

    def add(
        self, peer: Peer, patterns: Iterable[str], known: Iterable[str]
    ) -> tuple[list[str], list[str]]:
        """Add patterns for a peer; return the known instruments it now receives, and
        those it receives only since this call (sorted both).

        Only the second need their state sent: a client repeating a subscribe
        for `*` was sent every instrument's status each time (issue 11).
        """
        self._recipient_names.clear()
        active = self._patterns.setdefault(peer, set())
        known = list(known)
        known_ids = set(known)
        added: set[str] = set()
        for pattern in patterns:
            if pattern in active:
                continue  # already resolved when it was first added
            active.add(pattern)
            if is_literal(pattern):
                subscribers = self._by_instrument[pattern]
                if peer not in subscribers and pattern in known_ids:
                    added.add(pattern)
                self._add_subscriber(pattern, subscribers, peer)
            else:
                self._wildcards[pattern].add(peer)
                for instrument_id in known:
                    if matches(pattern, instrument_id):
                        subscribers = self._by_instrument[instrument_id]
                        if peer not in subscribers:
                            added.add(instrument_id)
                            self._add_subscriber(instrument_id, subscribers, peer)
        return self.instruments_of(peer, known), sorted(added)

    def unsubscribe(self, peer: Peer, patterns: Iterable[str], known: Iterable[str]) -> list[str]:
        """Remove patterns of a peer (unknown ones are ignored); return what it still receives."""
        self._recipient_names.clear()
        active = self._patterns.get(peer, set())
        for pattern in patterns:
            active.discard(pattern)
            self._drop_wildcard(pattern, peer)
        for instrument_id, subscribers in list(self._by_instrument.items()):
            if peer in subscribers and not any(matches(p, instrument_id) for p in active):
                subscribers.discard(peer)
                if not subscribers:
                    self._drop_instrument(instrument_id)
        return self.instruments_of(peer, known)

    def remove_peer(self, peer: Peer) -> None:
        """Forget every subscription of a peer that left."""
        self._recipient_names.clear()
        for pattern in self._patterns.pop(peer, ()):
            self._drop_wildcard(pattern, peer)
        for instrument_id, subscribers in list(self._by_instrument.items()):
            subscribers.discard(peer)
            if not subscribers:
                self._drop_instrument(instrument_id)

    def instrument_added(self, instrument_id: str) -> None:
        """Route an instrument new to the hub to every wildcard pattern that matches it."""
        self._recipient_names.clear()
        for pattern, peers in self._wildcards.items():
            if matches(pattern, instrument_id):
                subscribers = self._by_instrument[instrument_id]
                for peer in peers:
                    self._add_subscriber(instrument_id, subscribers, peer)

    def patterns(self, peer: Peer) -> list[str]:
        """The peer's active patterns, sorted."""
        return sorted(self._patterns.get(peer, ()))

    def instruments_of(self, peer: Peer, known: Iterable[str]) -> list[str]:
        """The known instruments whose data this peer receives, sorted."""
        return sorted(i for i in known if peer in self._by_instrument.get(i, ()))

    @property
    def index(self) -> Mapping[str, Set[Peer]]:
        """Peers per instrument, read-only: for the per-sample path of fan-out."""
        return self._by_instrument

    def subscribers(self, instrument_id: str) -> Set[Peer]:
        """The peers receiving this instrument (a live view: do not keep it)."""
        return self._by_instrument.get(instrument_id, _NOBODY)

    def recipients(self, instrument_id: str) -> str:
        """The subscribers' names as logged: up to 8 names, else a count."""
        names = self._recipient_names.get(instrument_id)
        if names is None:
            names = self._recipient_names[instrument_id] = describe_recipients(
                self.subscribers(instrument_id)
            )
        return names

    def _add_subscriber(self, instrument_id: str, subscribers: set[Peer], peer: Peer) -> None:
        first = not subscribers
        subscribers.add(peer)
        if first and self.on_interest is not None:
            self.on_interest(instrument_id, True)

    def _drop_instrument(self, instrument_id: str) -> None:
        del self._by_instrument[instrument_id]
        if self.on_interest is not None:
            self.on_interest(instrument_id, False)

    def _drop_wildcard(self, pattern: str, peer: Peer) -> None:
        holders = self._wildcards.get(pattern)
        if holders is not None:
            holders.discard(peer)
            if not holders:
                del self._wildcards[pattern]


def describe_recipients(peers: Iterable[Peer]) -> str:
    """Peer names for the log: sorted and comma-separated, or a count beyond 8."""
    names = sorted(p.name for p in peers)
    return ",".join(names) if len(names) <= 8 else f"{len(names)} clients"
