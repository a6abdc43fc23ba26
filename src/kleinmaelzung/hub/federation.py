"""Several hubs as one, over a `Bus`: what this hub's agents send goes to the others'
clients, commands go to the hub holding the agent, and each hub knows who serves what.

Only a hub with `bus` configured builds a `Federation`; a hub alone forwards
through `Fanout` exactly as before. On the bus (subjects in `bus.Subjects`):

- ``<prefix>.i.<instrument>.data|backlog|status|gap``: published by the hub
  whose agent serves the instrument, always (one publish per frame, the
  frame as its subscribers get it, encoded once); each hub subscribes only to
  the instruments its clients watch (`Subscriptions.on_interest`), so what a
  hub receives grows with its viewers.
- ``<prefix>.presence``: each hub's heartbeat, every `PRESENCE_INTERVAL_S`
  and at once on a change: the instruments its agents serve, with their
  states. A hub not heard for `PRESENCE_TIMEOUT_S` is gone: its instruments
  go offline.
- ``<prefix>.cmd.<hub>``: NATS request/reply to the hub holding the agent,
  answered with the agent's `Reply` (or that hub's error), under the same
  deadlines as on one hub (`Commands.forward_remote`). The asking user
  travels with the command (`BusCommand`): the holding hub holds the
  instrument's control lease, takes and releases it (``lease``, ``release``)
  for users of every hub, and refuses others' commands while it holds.
  Commands in flight through a hub that is lost are answered `hub_lost` at
  once (`Commands.hub_lost`). The lease travels in status and presence; when
  the agent fails over, the hub it joins adopts the lease it last heard of
  (`auth.guard.adopt_leases`), and the hub it left forgets its own as soon as
  the other hub announces the instrument.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from ..protocol import (
    Command,
    ErrorCode,
    ErrorInfo,
    Gap,
    Reply,
    Sample,
    Status,
    data_frame,
    encode,
    encode_samples,
    samples_array,
)
from .auth.guard import LEASE, RELEASE, lease_stops, remote_lease
from .bus import Bus, BusError, Subjects, Unsubscribe, open_bus
from .fanout import Fanout
from .registry import Announced

if TYPE_CHECKING:
    from .peers import Peer
    from .services import Hub

_log = logging.getLogger(__name__)

#: Seconds between two heartbeats of a hub's presence.
PRESENCE_INTERVAL_S = 1.0
#: A hub not heard for this long is taken for gone (three heartbeats missed).
PRESENCE_TIMEOUT_S = 3.5


class Presence(msgspec.Struct, frozen=True):
    """A hub's heartbeat on the bus: who it is, what its agents serve now."""

    hub: str
    name: str
    instruments: list[Announced]
    #: The hub is shutting down: its instruments go offline now.
    leaving: bool = False


class BusCommand(msgspec.Struct, frozen=True):
    """A command on its way to the hub holding the agent, with who asked.

    The holding hub enforces its control lease against `user` (the asking
    hub checked the user's role and grant: run the hubs with the same users).
    """

    command: Command
    #: The asking user's name on the asking hub (``anonymous`` on a hub without auth).
    user: str
    #: Whether that user is an admin (an admin's ``release`` ends anyone's lease).
    admin: bool = False


class _Seq(msgspec.Struct):
    """The one field of a sample a forwarding hub reads: its seq."""

    seq: int


_seqs = msgspec.json.Decoder(list[_Seq])
_presence = msgspec.json.Decoder(Presence)
_command = msgspec.json.Decoder(BusCommand)
_reply = msgspec.json.Decoder(Reply)
_status = msgspec.json.Decoder(Status)
_RUN_TAIL = b'],"run":'


class BusFanout(Fanout):
    """`Fanout` that also publishes to the bus what this hub's agents send.

    Only hubs on a bus use it: a hub alone keeps the plain `Fanout`, whose
    per-frame path has no bus check at all.
    """

    federation: Federation

    def publish_samples(
        self,
        samples: Sequence[Sample],
        frame: bytes | None = None,
        run: bytes = b"",
        *,
        backlog: bool = False,
    ) -> dict[str, str]:
        """Send to this hub's subscribers, and publish on the bus."""
        if samples:
            self.federation.publish_samples(samples, frame, run, backlog)
        return super().publish_samples(samples, frame, run, backlog=backlog)

    def publish_status(self, status: Status) -> None:
        """Send to this hub's subscribers, publish on the bus, announce the change."""
        super().publish_status(status)
        self.federation.publish_frame(status.instrument, "status", encode(status))
        self.federation.changed()

    def publish_gap(self, gap: Gap) -> None:
        """Send to this hub's subscribers, and publish on the bus."""
        super().publish_gap(gap)
        told = msgspec.structs.replace(gap, id=None)
        self.federation.publish_frame(gap.instrument, "gap", encode(told))


class Federation:
    """This hub's side of the bus: publishing, interest, presence, commands of other hubs."""

    def __init__(self, hub: Hub, subjects: Subjects, bus: Bus | None = None) -> None:
        self._hub = hub
        self._subjects = subjects
        self._bus = bus
        #: This hub on the bus: random per process, like `Hub.boot_id` but
        #: long enough that hubs never share one.
        self.hub_id = secrets.token_hex(8)
        # Per (instrument, kind): the subject, built once.
        self._subject_of: dict[tuple[str, str], str] = {}
        #: Instruments this hub's clients watch, and the bus subscriptions for them.
        self._wanted: set[str] = set()
        self._subscribed: dict[str, Unsubscribe] = {}
        self._by_subject: dict[str, str] = {}
        self._interest_changed = asyncio.Event()
        self._changed = asyncio.Event()
        #: Other hubs: bus id -> (name, monotonic time last heard).
        self.hubs: dict[str, tuple[str, float]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # --- publishing what this hub's agents send ------------------------------------

    def _subject(self, instrument: str, kind: str) -> str:
        subject = self._subject_of.get((instrument, kind))
        if subject is None:
            subject = self._subject_of[(instrument, kind)] = self._subjects.instrument(
                instrument, kind
            )
        return subject

    def publish_samples(
        self, samples: Sequence[Sample], frame: bytes | None, run: bytes, backlog: bool
    ) -> None:
        """Publish samples of one run, one data frame per instrument."""
        bus = self._bus
        if bus is None:
            return
        kind = "backlog" if backlog else "data"
        first = samples[0].instrument
        if frame is not None or all(s.instrument == first for s in samples):
            array = (samples_array(frame) if frame is not None else None) or encode_samples(samples)
            bus.publish(self._subject(first, kind), data_frame((array,), run))
            return
        by_instrument: dict[str, list[Sample]] = {}
        for sample in samples:
            by_instrument.setdefault(sample.instrument, []).append(sample)
        for instrument, group in by_instrument.items():
            bus.publish(self._subject(instrument, kind), data_frame((encode_samples(group),), run))

    def publish_frame(self, instrument: str, kind: str, frame: bytes) -> None:
        """Publish an instrument's status or gap, as its subscribers get it."""
        if self._bus is not None:
            self._bus.publish(self._subject(instrument, kind), frame)

    def changed(self) -> None:
        """What this hub's agents serve changed: announce it at once."""
        self._changed.set()

    # --- what other hubs publish ---------------------------------------------------

    def interest(self, instrument: str, wanted: bool) -> None:
        """A client here started (or every client stopped) watching an instrument."""
        if wanted:
            self._wanted.add(instrument)
        else:
            self._wanted.discard(instrument)
        self._interest_changed.set()

    async def _follow_interest(self) -> None:
        # Bus subscriptions follow `_wanted` in a task of their own: a
        # subscribe and unsubscribe in quick succession end as the last said.
        assert self._bus is not None
        while True:
            await self._interest_changed.wait()
            self._interest_changed.clear()
            for instrument in sorted(self._wanted - self._subscribed.keys()):
                subject = self._subjects.instrument_all(instrument)
                self._by_subject[subject[:-1]] = instrument
                self._subscribed[instrument] = await self._bus.subscribe(subject, self._received)
            for instrument in sorted(self._subscribed.keys() - self._wanted):
                await self._subscribed.pop(instrument)()

    def _received(self, subject: str, payload: bytes) -> None:
        base, _, kind = subject.rpartition(".")
        instrument = self._by_subject.get(base + ".")
        if instrument is None:
            return
        hub = self._hub
        if kind == "data" or kind == "backlog":
            array = samples_array(payload)
            if array is None:
                return
            end = payload.rfind(_RUN_TAIL)
            run = payload[end + len(_RUN_TAIL) : -1] if end > 0 else b""
            seqs = _seqs.decode(array)
            if not seqs:
                return
            span = (instrument, seqs[0].seq, seqs[-1].seq, len(seqs))
            hub.fanout.forward_samples(instrument, array, run, span, backlog=kind == "backlog")
            hub.registry.saw_remote(instrument, hub.clock())
        elif kind == "status":
            status = _status.decode(payload)
            entry = hub.registry.instruments.get(instrument)
            if entry is None or entry.hub is None:
                return  # not (or no longer) another hub's
            changed = hub.registry.set_status(instrument, status.state, status.reason, hub.clock())
            if status.lease != entry.lease:  # the holding hub's lease, taken or ended
                hub.registry.set_lease(instrument, status.lease)
                changed = True
            if changed:
                hub.fanout.forward_frame(instrument, payload)
        elif kind == "gap":
            hub.fanout.forward_frame(instrument, payload)

    # --- presence --------------------------------------------------------------------

    def _presence(self, leaving: bool = False) -> bytes:
        served = [] if leaving else [e.announced() for e in self._hub.registry.served_here()]
        return msgspec.json.encode(
            Presence(
                hub=self.hub_id,
                name=self._hub.config.name,
                instruments=served,
                leaving=leaving,
            )
        )

    async def _announce_forever(self) -> None:
        assert self._bus is not None
        while True:
            self._bus.publish(self._subjects.presence, self._presence())
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns
            # the event's result when the event is set in the step this task
            # is cancelled (an agent going offline at shutdown does just that)
            # and the cancel is lost: the task announced forever, the hub
            # never stopped nor said `leaving`, and other hubs' commands
            # through it waited for their deadline instead of `hub_lost`.
            try:
                async with asyncio.timeout(PRESENCE_INTERVAL_S):
                    await self._changed.wait()
                # Coalesced: a hundred instruments going offline at once are
                # one announcement, a moment later.
                await asyncio.sleep(0.01)
            except TimeoutError:
                pass
            self._changed.clear()
            self._expire_hubs()

    def _on_presence(self, subject: str, payload: bytes) -> None:
        try:
            presence = _presence.decode(payload)
        except msgspec.ValidationError as exc:
            _log.warning("bad presence on the bus", extra={"error": str(exc)})
            return
        if presence.hub == self.hub_id:
            return
        hub = self._hub
        now = hub.clock()
        if presence.leaving:
            self.hubs.pop(presence.hub, None)
            reason = f"hub {presence.name!r} shut down"
            hub.commands.hub_lost(presence.hub, reason)
            self._went_offline(hub.registry.drop_remote(presence.hub, reason, now))
            return
        if presence.hub not in self.hubs:
            _log.info("hub joined the bus", extra={"hub": presence.name, "id": presence.hub})
            self._changed.set()  # so that the new hub learns of this one at once
        self.hubs[presence.hub] = (presence.name, time.monotonic())
        gone = f"its agent left hub {presence.name!r}"
        new, changed = hub.registry.set_remote(presence.hub, presence.instruments, gone)
        for item in presence.instruments:
            # Served there now (its agent failed over): the lease is that hub's,
            # as it announces it; one this hub held would bind a second time.
            if hub.registry.instruments[item.info.id].hub == presence.hub:
                hub.auth.leases.drop(item.info.id)
        for instrument in new:
            hub.subscriptions.instrument_added(instrument)
        for instrument in [*new, *changed]:
            entry = hub.registry.instruments[instrument]
            status = Status(
                instrument=instrument,
                state=entry.state,
                ts=now,
                reason=entry.reason,
                lease=entry.lease,
            )
            hub.fanout.forward_frame(instrument, encode(status))

    def _expire_hubs(self) -> None:
        now = time.monotonic()
        for hub_id, (name, heard) in list(self.hubs.items()):
            if now - heard > PRESENCE_TIMEOUT_S:
                del self.hubs[hub_id]
                _log.warning(
                    "hub silent on the bus: its instruments go offline", extra={"hub": name}
                )
                reason = f"hub {name!r} stopped answering on the bus"
                self._hub.commands.hub_lost(hub_id, reason)
                self._went_offline(
                    self._hub.registry.drop_remote(hub_id, reason, self._hub.clock())
                )

    def _went_offline(self, instruments: list[str]) -> None:
        hub = self._hub
        now = hub.clock()
        for instrument in instruments:
            entry = hub.registry.instruments[instrument]
            # With the lease it had: it holds wherever its agent connects next
            # (`auth.guard.adopt_leases`).
            status = Status(
                instrument=instrument,
                state="offline",
                ts=now,
                reason=entry.reason,
                lease=entry.lease,
            )
            hub.fanout.forward_frame(instrument, encode(status))

    # --- commands --------------------------------------------------------------------

    async def run(
        self, hub: str, command: Command, wait_s: float, client: Peer | None = None
    ) -> Reply | None:
        """Ask the hub holding the agent to run `command` for `client`'s user (`RemoteCommands`)."""
        assert self._bus is not None
        principal = self._hub.auth.principal(client) if client is not None else None
        asked = BusCommand(
            command=command,
            user=principal.name if principal is not None else "",
            admin=principal.is_admin if principal is not None else False,
        )
        payload = msgspec.json.encode(asked)
        try:
            answer = await self._bus.request(self._subjects.commands(hub), payload, wait_s)
        except TimeoutError:
            return None  # answered `outcome_unknown` at the deadline
        if answer is None:
            name = self.hubs.get(hub, ("?", 0.0))[0]
            return Reply(
                id=command.id,
                ok=False,
                error=ErrorInfo(
                    code=ErrorCode.INSTRUMENT_OFFLINE,
                    message=f"instrument {command.instrument!r} is offline "
                    f"(its hub {name!r} does not answer on the bus)",
                ),
            )
        return _reply.decode(answer)

    async def _serve_command(self, payload: bytes) -> bytes:
        asked = _command.decode(payload)
        command = asked.command
        hub = self._hub
        registry = hub.registry
        entry = registry.instruments.get(command.instrument)
        agent = registry.owner(command.instrument)
        if agent is None:
            # Gone from this hub since the asking hub looked: the errors a
            # client of this hub would get.
            if entry is None:
                code = ErrorCode.UNKNOWN_INSTRUMENT
                message = f"no instrument {command.instrument!r} is known to this hub"
            else:
                code = ErrorCode.INSTRUMENT_OFFLINE
                message = f"instrument {command.instrument!r} is offline" + (
                    f" ({entry.reason})" if entry.reason else ""
                )
            error = ErrorInfo(code=code, message=message)
            return encode(Reply(id=command.id, ok=False, error=error))
        # This hub holds the instrument's lease: it decides, for users of every hub.
        if command.name in (LEASE, RELEASE):
            return encode(remote_lease(hub, command, asked.user, asked.admin))
        held = lease_stops(hub, command, asked.user)
        if held is not None:
            return encode(held)
        reply = await hub.commands.forward_for_bus(command, agent.peer)
        return encode(reply)

    # --- lifecycle -------------------------------------------------------------------

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: connect, serve, and leave the bus at shutdown."""
        if self._bus is None:
            url = self._hub.config.bus
            assert url is not None
            self._bus = await open_bus(url)
        bus = self._bus
        await bus.subscribe(self._subjects.presence, self._on_presence)
        await bus.serve(self._subjects.commands(self.hub_id), self._serve_command)
        self._tasks = [
            asyncio.create_task(self._announce_forever(), name="kmz-bus-presence"),
            asyncio.create_task(self._follow_interest(), name="kmz-bus-interest"),
        ]
        _log.info("hub on the bus", extra={"id": self.hub_id, "prefix": self._subjects.prefix})
        yield
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        bus.publish(self._subjects.presence, self._presence(leaving=True))
        await bus.close()


def join_bus(hub: Hub, app: web.Application, bus: Bus | None = None) -> Federation:
    """Put a hub built with a `BusFanout` on its bus: `bus`, else `config.bus` at startup."""
    federation = Federation(hub, Subjects(hub.config.bus_prefix), bus)
    assert isinstance(hub.fanout, BusFanout)
    hub.fanout.federation = federation
    hub.subscriptions.on_interest = federation.interest
    hub.commands.remote = federation
    app.cleanup_ctx.append(federation.lifecycle)
    return federation


__all__ = ["BusCommand", "BusError", "BusFanout", "Federation", "Presence", "join_bus"]
