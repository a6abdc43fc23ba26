"""The bus between hubs: publish, subscribe and request/reply over subjects.

A hub with no bus configured never touches this module: its forwarding path
is exactly the one-hub path (`Fanout`), at no cost. With `bus` set in the hub
config, `federation.Federation` speaks through a `Bus`: NATS (`bus_nats`,
extra ``kleinmaelzung[nats]``) between processes and machines, or `LocalBus`
between hubs in one process (tests, and a reference for the semantics).

Subjects follow NATS's rules: tokens separated by dots, ``*`` matches one
token and ``>`` the rest. Instrument ids may hold dots, so they are mapped to
one token each by `subject_token`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

#: Called with (subject, payload) for each message on a subscribed subject,
#: in the event loop; it must not block.
OnMessage = Callable[[str, bytes], None]
#: Answers a request's payload with the reply's payload.
Responder = Callable[[bytes], Awaitable[bytes]]

#: A subject prefix: dot-separated tokens of letters, digits, '_' and '-'.
PREFIX_REGEX = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
_PREFIX = re.compile(PREFIX_REGEX)
# Instrument ids are [a-z0-9_.-]: '-', letters and digits stay; '_' and '.'
# (and anything else) become '_' and two hex digits, so the map is one-to-one.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class BusError(Exception):
    """The bus cannot be reached or used (a bad URL, a server that does not answer)."""


class Unsubscribe(Protocol):
    """Ends one subscription."""

    async def __call__(self) -> None: ...


class Bus(Protocol):
    """What a hub needs of a message bus."""

    def publish(self, subject: str, payload: bytes) -> None:
        """Queue one message; never blocks, never waits for the bus."""

    async def subscribe(self, subject: str, on_message: OnMessage) -> Unsubscribe:
        """Receive the messages published on `subject` (wildcards allowed) from now on."""

    async def serve(self, subject: str, respond: Responder) -> None:
        """Answer the requests sent to `subject` until the bus closes."""

    async def request(self, subject: str, payload: bytes, timeout_s: float) -> bytes | None:
        """Send a request, wait for its answer; None if nobody serves `subject`.

        Raises `TimeoutError` when nobody answered in time.
        """

    async def close(self) -> None:
        """Send what is queued, then disconnect."""


def subject_token(instrument_id: str) -> str:
    """One subject token for an instrument id, different for different ids."""
    if all(c in _PLAIN for c in instrument_id):
        return instrument_id
    return "".join(
        c if c in _PLAIN else "".join(f"_{b:02x}" for b in c.encode()) for c in instrument_id
    )


def is_prefix(text: str) -> bool:
    """Tell whether `text` can start every subject of a bus (`bus_prefix`)."""
    return _PREFIX.match(text) is not None


@dataclass(frozen=True)
class Subjects:
    """The subjects hubs sharing one prefix speak on."""

    prefix: str = "kmz"

    def instrument(self, instrument_id: str, kind: str) -> str:
        """Where an instrument's `kind` (data, backlog, status, gap) is published."""
        return f"{self.prefix}.i.{subject_token(instrument_id)}.{kind}"

    def instrument_all(self, instrument_id: str) -> str:
        """Every kind of message of one instrument (what a hub subscribes to)."""
        return f"{self.prefix}.i.{subject_token(instrument_id)}.*"

    @property
    def presence(self) -> str:
        """Each hub's heartbeat: the instruments it serves now."""
        return f"{self.prefix}.presence"

    def commands(self, hub_id: str) -> str:
        """Where a hub takes commands for the instruments its agents serve."""
        return f"{self.prefix}.cmd.{hub_id}"


def subject_matches(pattern: str, subject: str) -> bool:
    """Tell whether `subject` matches a NATS subject pattern (``*`` and ``>``)."""
    wanted = pattern.split(".")
    tokens = subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or (token != "*" and token != tokens[i]):
            return False
    return len(tokens) == len(wanted)


@dataclass
class LocalBroker:
    """Subjects shared by the `LocalBus`es of one process: hubs in one test."""

    subscribers: list[tuple[str, OnMessage, LocalBus]] = field(default_factory=list)
    responders: dict[str, Responder] = field(default_factory=dict)


class LocalBus:
    """A `Bus` between hubs in one event loop, with NATS's semantics (no echo).

    Messages are delivered in the next loop iteration, in order, as a
    network would; a hub never receives what it published itself.
    """

    def __init__(self, broker: LocalBroker) -> None:
        self._broker = broker
        self._closed = False
        self._served: list[str] = []

    def publish(self, subject: str, payload: bytes) -> None:
        """Deliver to every matching subscriber of the other buses, soon."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        for pattern, on_message, owner in list(self._broker.subscribers):
            if owner is not self and subject_matches(pattern, subject):
                loop.call_soon(on_message, subject, payload)

    async def subscribe(self, subject: str, on_message: OnMessage) -> Unsubscribe:
        """Receive what the other buses publish on `subject`."""
        entry = (subject, on_message, self)
        self._broker.subscribers.append(entry)

        async def unsubscribe() -> None:
            if entry in self._broker.subscribers:
                self._broker.subscribers.remove(entry)

        return unsubscribe

    async def serve(self, subject: str, respond: Responder) -> None:
        """Answer requests to `subject`."""
        self._broker.responders[subject] = respond
        self._served.append(subject)

    async def request(self, subject: str, payload: bytes, timeout_s: float) -> bytes | None:
        """Ask the bus serving `subject`; None if there is none."""
        respond = self._broker.responders.get(subject)
        if respond is None:
            return None
        return await asyncio.wait_for(respond(payload), timeout_s)

    async def close(self) -> None:
        """Leave the broker: no more messages either way."""
        self._closed = True
        self._broker.subscribers[:] = [s for s in self._broker.subscribers if s[2] is not self]
        for subject in self._served:
            self._broker.responders.pop(subject, None)


async def open_bus(url: str) -> Bus:
    """Connect to the bus at `url` (``nats://host:port`` or ``tls://host:port``).

    Raises `BusError`. Hubs in one process share a `LocalBus` passed to
    `create_app` instead.
    """
    from .bus_nats import connect_nats  # only with a NATS bus: needs nats-py

    return await connect_nats(url)
