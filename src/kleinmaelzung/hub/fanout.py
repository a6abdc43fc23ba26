"""Delivery to peers: encode once, log, and queue the same bytes for every recipient."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence

import msgspec

from ..protocol import (
    Error,
    ErrorCode,
    Gap,
    Message,
    Sample,
    Status,
    data_frame,
    encode,
    encode_samples,
    samples_array,
)
from .peers import Peer, Span, wire_frame
from .subscriptions import Subscriptions, describe_recipients
from .traffic import TrafficLog

_log = logging.getLogger(__name__)


class Fanout:
    """Sends messages to one peer, and samples and status to their subscribers."""

    def __init__(
        self, subscriptions: Subscriptions, traffic: TrafficLog, *, max_message_bytes: int
    ) -> None:
        self._subscriptions = subscriptions
        # Read per sample batch: the index itself, not a method call per lookup.
        self._subscribers = subscriptions.index
        self._traffic = traffic
        self._max_message_bytes = max_message_bytes
        #: Sample batches handed to clients (one per client per batch), and
        #: errors sent by code: read by `/metrics`.
        self.deliveries = 0
        self.errors: Counter[str] = Counter()

    def send(self, peer: Peer, message: Message, *, instrument: str | None = None) -> None:
        """Encode, log and queue one message to one peer."""
        refusal = peer.connection.check_send(message)
        if refusal is not None:
            _log.error("not sent: a hub bug", extra={"peer": peer.name, "why": refusal.message})
            return
        frame = encode(message)
        if len(frame) > self._max_message_bytes:
            # The hub keeps to the limit it documents for what it sends, so
            # that no peer has to accept unbounded frames from it.
            _log.warning(
                "answer too large",
                extra={
                    "peer": peer.name,
                    "type": message.__struct_config__.tag,
                    "bytes": len(frame),
                },
            )
            message = Error(
                code=ErrorCode.MESSAGE_TOO_LARGE,
                message=f"the answer would be {len(frame)} bytes, over the hub's limit of "
                f"{self._max_message_bytes}; ask for less (a narrower pattern or a smaller limit)",
                id=getattr(message, "id", None),
            )
            frame = encode(message)
        if isinstance(message, Error):
            self.errors[message.code] += 1
        self._traffic.message("out", peer.name, message, frame, instrument)
        peer.send(frame)

    def publish_samples(
        self,
        samples: Sequence[Sample],
        frame: bytes | None = None,
        run: bytes = b"",
        *,
        backlog: bool = False,
    ) -> dict[str, str]:
        """Send samples of one run to their subscribers; return the recipients per instrument.

        One encoding per distinct recipient set. `frame`, if given, is the
        agent's original encoding of exactly these samples, all of one
        instrument: its samples array is forwarded as is. `run` is the run
        as `encode_run` gives it. `backlog` samples (from an agent's spool) go
        only to the subscribers that asked for them.
        """
        if not samples:
            return {}
        first = samples[0].instrument
        if frame is not None or all(s.instrument == first for s in samples):
            subscribers = self._subscribers.get(first)
            if not subscribers:
                return {}
            array = (samples_array(frame) if frame is not None else None) or encode_samples(samples)
            spans: tuple[Span, ...] = ((first, samples[0].seq, samples[-1].seq, len(samples)),)
            if backlog:
                takers = [p for p in subscribers if p.wants_backlog]
                for peer in takers:
                    peer.send_samples(array, run, spans)
                self.deliveries += len(takers)
                return {first: describe_recipients(takers)} if takers else {}
            # Encoded once: the whole WebSocket frame, for every subscriber
            # whose socket keeps up (the others queue the array).
            wire = wire_frame(data_frame((array,), run)) if len(subscribers) > 1 else None
            for peer in subscribers:
                peer.send_samples(array, run, spans, wire)
            self.deliveries += len(subscribers)
            return {first: self._subscriptions.recipients(first)}
        by_peer: dict[Peer, list[Sample]] = defaultdict(list)
        for sample in samples:
            for peer in self._subscriptions.subscribers(sample.instrument):
                if peer.wants_backlog or not backlog:
                    by_peer[peer].append(sample)
        groups: dict[tuple[int, ...], tuple[list[Sample], list[Peer]]] = {}
        for peer, peer_samples in by_peer.items():
            key = tuple(id(s) for s in peer_samples)
            groups.setdefault(key, (peer_samples, []))[1].append(peer)
        for group_samples, peers in groups.values():
            array = encode_samples(group_samples)
            spans = _spans(group_samples)
            for peer in peers:
                peer.send_samples(array, run, spans)
            self.deliveries += len(peers)
        if backlog:
            by_instrument: dict[str, list[Peer]] = defaultdict(list)
            for peer, peer_samples in by_peer.items():
                for instrument in {s.instrument for s in peer_samples}:
                    by_instrument[instrument].append(peer)
            return {i: describe_recipients(ps) for i, ps in by_instrument.items()}
        return {
            instrument: self._subscriptions.recipients(instrument)
            for instrument in {s.instrument for s in samples}
            if self._subscriptions.subscribers(instrument)
        }

    def publish_gap(self, gap: Gap) -> None:
        """Tell an instrument's subscribers which samples will never arrive.

        Logged even with nobody subscribed: the hub's statement of what is
        missing (the agent's own message, logged as it came, may name samples
        the log holds).
        """
        subscribers = self._subscriptions.subscribers(gap.instrument)
        told = msgspec.structs.replace(gap, id=None)
        frame = encode(told)
        recipients = self._subscriptions.recipients(gap.instrument) if subscribers else ""
        self._traffic.message("out", recipients, told, frame, gap.instrument)
        for peer in subscribers:
            peer.send(frame)

    def publish_status(self, status: Status) -> None:
        """Send an instrument's status change to its subscribers, logged once.

        Logged with nobody subscribed too: the log is the instruments'
        timeline (an agent stopped while nobody watched went offline then).
        """
        subscribers = self._subscriptions.subscribers(status.instrument)
        frame = encode(status)
        recipients = self._subscriptions.recipients(status.instrument) if subscribers else ""
        self._traffic.status_out(recipients, frame, status.instrument)
        for peer in subscribers:
            peer.send(frame)

    def forward_samples(
        self, instrument: str, array: bytes, run: bytes, span: Span, *, backlog: bool = False
    ) -> None:
        """Send an encoded samples array of one instrument, from another hub, to its subscribers.

        Not logged here: the hub whose agent sent it logged it.
        """
        subscribers = self._subscribers.get(instrument)
        if not subscribers:
            return
        spans = (span,)
        if backlog:
            takers = [p for p in subscribers if p.wants_backlog]
            for peer in takers:
                peer.send_samples(array, run, spans)
            self.deliveries += len(takers)
            return
        wire = wire_frame(data_frame((array,), run)) if len(subscribers) > 1 else None
        for peer in subscribers:
            peer.send_samples(array, run, spans, wire)
        self.deliveries += len(subscribers)

    def forward_frame(self, instrument: str, frame: bytes) -> None:
        """Send an encoded status or gap of another hub's instrument to its subscribers."""
        for peer in self._subscriptions.subscribers(instrument):
            peer.send(frame)


def _spans(samples: Sequence[Sample]) -> tuple[Span, ...]:
    """Per instrument: first seq, last seq and count of these samples (of one run)."""
    seen: dict[str, list[int]] = {}
    for sample in samples:
        span = seen.get(sample.instrument)
        if span is None:
            seen[sample.instrument] = [sample.seq, sample.seq, 1]
        else:
            span[1] = sample.seq
            span[2] += 1
    return tuple((instrument, first, last, n) for instrument, (first, last, n) in seen.items())
