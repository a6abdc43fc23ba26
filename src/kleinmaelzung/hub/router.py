"""Subscriptions, encode-once fan-out, and commands in flight between clients and agents.

Only this module writes the subscription index. Patterns are resolved when a
client subscribes and when an instrument first appears, never per message:
routing a sample is one dict lookup.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..protocol import (
    Command,
    ErrorCode,
    ErrorInfo,
    Message,
    Reply,
    Sample,
    Status,
    encode,
    encode_samples,
    is_literal,
    matches,
)
from .peers import Peer
from .store import Direction, Record, Store

_log = logging.getLogger(__name__)


#: Seconds the hub waits past a command's deadline for the agent's reply: the
#: agent does not start a command after its deadline and bounds the run by it,
#: so a reply later than this means the agent went silent or away.
DEADLINE_GRACE_S = 1.0


@dataclass
class _Pending:
    client: Peer
    client_id: str
    agent: str
    instrument: str
    timer: asyncio.TimerHandle
    #: Why the agent went away with this command in flight, if it did.
    agent_left: str | None = None


class Router:
    """Delivers data and status to subscribers and commands to agents, and logs it all."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock
        #: The clock of command deadlines, sent to agents in welcome and ack.
        self.monotonic = monotonic
        self._by_instrument: dict[str, set[Peer]] = defaultdict(set)
        self._patterns: dict[Peer, set[str]] = {}
        self._wildcards: dict[str, set[Peer]] = defaultdict(set)
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        # Command ids unique across hub restarts: a reply that an agent sends
        # late, to the next hub process, must not match a new command.
        self._id_prefix = secrets.token_hex(4)
        self._recipient_names: dict[str, str] = {}

    # --- sending and logging -------------------------------------------------

    def send(self, peer: Peer, message: Message, *, instrument: str | None = None) -> None:
        """Encode, log and queue one message to one peer."""
        frame = encode(message)
        self.log("out", peer.name, message, frame, instrument)
        peer.send(frame)

    def log(
        self,
        direction: Direction,
        peer: str,
        message: Message,
        frame: bytes,
        instrument: str | None = None,
    ) -> None:
        """Append one message to the traffic log."""
        self._store.append(
            Record(
                ts=self._clock(),
                direction=direction,
                peer=peer,
                type=message.__struct_config__.tag,  # type: ignore[arg-type]
                message=frame,
                instrument=instrument,
            )
        )

    # --- subscriptions -------------------------------------------------------

    def subscribe(self, peer: Peer, patterns: Iterable[str], known: Iterable[str]) -> list[str]:
        """Add patterns for a peer; return the known instruments it now receives."""
        self._recipient_names.clear()
        active = self._patterns.setdefault(peer, set())
        known = list(known)
        for pattern in patterns:
            active.add(pattern)
            if is_literal(pattern):
                self._by_instrument[pattern].add(peer)
            else:
                self._wildcards[pattern].add(peer)
                for instrument_id in known:
                    if matches(pattern, instrument_id):
                        self._by_instrument[instrument_id].add(peer)
        return self.subscribed_instruments(peer, known)

    def unsubscribe(self, peer: Peer, patterns: Iterable[str], known: Iterable[str]) -> list[str]:
        """Remove patterns of a peer; return the known instruments it still receives."""
        self._recipient_names.clear()
        active = self._patterns.get(peer, set())
        for pattern in patterns:
            active.discard(pattern)
            holders = self._wildcards.get(pattern)
            if holders is not None:
                holders.discard(peer)
                if not holders:
                    del self._wildcards[pattern]
        known = list(known)
        for instrument_id, subscribers in list(self._by_instrument.items()):
            if peer in subscribers and not any(matches(p, instrument_id) for p in active):
                subscribers.discard(peer)
                if not subscribers:
                    del self._by_instrument[instrument_id]
        return self.subscribed_instruments(peer, known)

    def patterns(self, peer: Peer) -> list[str]:
        """The peer's active patterns, sorted."""
        return sorted(self._patterns.get(peer, ()))

    def subscribed_instruments(self, peer: Peer, known: Iterable[str]) -> list[str]:
        """The known instruments whose data this peer receives."""
        return sorted(i for i in known if peer in self._by_instrument.get(i, ()))

    def instrument_added(self, instrument_id: str) -> None:
        """Route a new instrument to every wildcard pattern that matches it."""
        self._recipient_names.clear()
        for pattern, peers in self._wildcards.items():
            if matches(pattern, instrument_id):
                self._by_instrument[instrument_id].update(peers)

    def remove_peer(self, peer: Peer) -> None:
        """Forget a disconnected peer's subscriptions and its commands in flight."""
        self._recipient_names.clear()
        for pattern in self._patterns.pop(peer, ()):
            holders = self._wildcards.get(pattern)
            if holders is not None:
                holders.discard(peer)
                if not holders:
                    del self._wildcards[pattern]
        for instrument_id, subscribers in list(self._by_instrument.items()):
            subscribers.discard(peer)
            if not subscribers:
                del self._by_instrument[instrument_id]
        for hub_id, pending in list(self._pending.items()):
            if pending.client is peer:
                pending.timer.cancel()
                del self._pending[hub_id]

    # --- fan-out ---------------------------------------------------------------

    def publish_samples(
        self, samples: Sequence[Sample], frame: bytes | None = None
    ) -> dict[str, str]:
        """Send samples to their subscribers; return the recipients per instrument.

        One encoding per distinct recipient set. `frame` is the agent's original
        encoding of exactly these samples; when they all belong to one
        instrument its samples array is forwarded as is.
        """
        if not samples:
            return {}
        first = samples[0].instrument
        if all(s.instrument == first for s in samples):
            subscribers = self._by_instrument.get(first)
            if not subscribers:
                return {}
            array = _samples_array(frame) if frame is not None else None
            array = array or encode_samples(samples)
            for peer in subscribers:
                peer.send_samples(array)
            return {first: self._recipients(first, subscribers)}
        by_peer: dict[Peer, list[Sample]] = defaultdict(list)
        for sample in samples:
            for peer in self._by_instrument.get(sample.instrument, ()):
                by_peer[peer].append(sample)
        groups: dict[tuple[int, ...], tuple[list[Sample], list[Peer]]] = {}
        for peer, peer_samples in by_peer.items():
            key = tuple(id(s) for s in peer_samples)
            groups.setdefault(key, (peer_samples, []))[1].append(peer)
        for group_samples, peers in groups.values():
            array = encode_samples(group_samples)
            for peer in peers:
                peer.send_samples(array)
        return {
            instrument: self._recipients(instrument, self._by_instrument[instrument])
            for instrument in {s.instrument for s in samples}
            if self._by_instrument.get(instrument)
        }

    def publish_status(self, status: Status) -> None:
        """Send an instrument's status change to its subscribers."""
        subscribers = self._by_instrument.get(status.instrument)
        if subscribers:
            frame = encode(status)
            self._store.append(
                Record(
                    ts=self._clock(),
                    direction="out",
                    peer=_recipients(subscribers),
                    type="status",
                    message=frame,
                    instrument=status.instrument,
                )
            )
            for peer in subscribers:
                peer.send(frame)

    def _recipients(self, instrument: str, peers: Iterable[Peer]) -> str:
        # Cached per instrument: naming the recipients is per message, while
        # subscriptions change rarely (every change clears the cache).
        names = self._recipient_names.get(instrument)
        if names is None:
            names = self._recipient_names[instrument] = _recipients(peers)
        return names

    # --- commands ------------------------------------------------------------------

    def forward_command(self, client: Peer, command: Command, agent: Peer) -> None:
        """Send a client's command to the owning agent under a hub-wide id, with its deadline."""
        hub_id = f"{self._id_prefix}.{next(self._ids)}"
        loop = asyncio.get_running_loop()
        deadline = self.monotonic() + command.timeout_s
        # The agent starts the command only before its deadline and ends it
        # by then; the hub waits a little longer for the reply to travel.
        timer = loop.call_later(command.timeout_s + DEADLINE_GRACE_S, self._expire, hub_id)
        self._pending[hub_id] = _Pending(
            client=client,
            client_id=command.id,
            agent=agent.name,
            instrument=command.instrument,
            timer=timer,
        )
        forwarded = Command(
            id=hub_id,
            instrument=command.instrument,
            name=command.name,
            args=command.args,
            timeout_s=command.timeout_s,
            deadline=deadline,
        )
        self.send(agent, forwarded, instrument=command.instrument)

    def complete_command(self, agent: Peer, reply: Reply) -> bool:
        """Route an agent's reply back to the asking client; False if nobody waits for it."""
        pending = self._pending.get(reply.id)
        if pending is None or pending.agent != agent.name:
            return False
        del self._pending[reply.id]
        pending.timer.cancel()
        self._answer(
            pending,
            Reply(id=pending.client_id, ok=reply.ok, result=reply.result, error=reply.error),
        )
        return True

    def pending_instrument(self, hub_id: str) -> str | None:
        """The instrument a command in flight was sent to."""
        pending = self._pending.get(hub_id)
        return pending.instrument if pending is not None else None

    def agent_left(self, agent_name: str, reason: str) -> None:
        """Note that an agent went away with commands in flight.

        They are not answered now: the agent may have run them, or may still
        read them from its socket buffer and run them before their deadline
        (it cannot know at once that its connection is gone). Each is answered
        at its deadline, `outcome_unknown`, unless the agent comes back and
        replies first.
        """
        for pending in self._pending.values():
            if pending.agent == agent_name and pending.agent_left is None:
                pending.agent_left = reason

    def reply_error(self, client: Peer, command: Command, code: ErrorCode, message: str) -> None:
        """Answer a command at once with an error reply."""
        client.connection.complete_command(command.id)
        self.send(client, _failed(command.id, code, message), instrument=command.instrument)

    def _expire(self, hub_id: str) -> None:
        pending = self._pending.pop(hub_id, None)
        if pending is None:
            return
        if pending.agent_left is not None:
            what = f"agent {pending.agent!r} went away ({pending.agent_left}) after it was sent"
        else:
            what = f"no reply from agent {pending.agent!r} by the command's deadline"
        self._answer(
            pending,
            _failed(
                pending.client_id,
                ErrorCode.OUTCOME_UNKNOWN,
                f"{what}: the command may have run; it will not run any more",
            ),
        )

    def _answer(self, pending: _Pending, reply: Reply) -> None:
        pending.client.connection.complete_command(pending.client_id)
        self.send(pending.client, reply, instrument=pending.instrument)


def _failed(command_id: str, code: ErrorCode, message: str) -> Reply:
    return Reply(id=command_id, ok=False, error=ErrorInfo(code=code, message=message))


_DATA_HEAD = b'{"type":"data","samples":['
_DATA_TAIL = b"]}"


def _samples_array(frame: bytes) -> bytes | None:
    """The samples array of a data frame as msgspec encodes it, or None if laid out otherwise."""
    if frame.startswith(_DATA_HEAD) and frame.endswith(_DATA_TAIL):
        return frame[len(_DATA_HEAD) - 1 : -len(_DATA_TAIL) + 1]
    return None


def _recipients(peers: Iterable[Peer]) -> str:
    names = sorted(p.name for p in peers)
    return ",".join(names) if len(names) <= 8 else f"{len(names)} clients"
