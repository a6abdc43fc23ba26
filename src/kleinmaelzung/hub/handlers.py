"""One handler per message type that agents and clients send after their hello.

Handlers receive only messages that decoded and passed the connection's state
machine; they call the hub's services and never the reverse. The table of
handlers belongs to each app (`default_handlers()` builds one), so two hubs
in one process share nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ..protocol import (
    TRANSCRIPT,
    Ack,
    AgentState,
    CloseCode,
    Command,
    Data,
    Error,
    ErrorCode,
    Gap,
    InstrumentList,
    ListInstruments,
    PeerKind,
    QueryHistory,
    QueryLog,
    RawTraffic,
    Reply,
    Sample,
    Status,
    Subscribe,
    Subscribed,
    Unsubscribe,
    check_arguments,
    encode,
    encode_run,
)
from .auth.guard import permit
from .peers import Peer
from .store import StoreError
from .traffic import ack_key
from .transcripts import agent_raw, forward_transcript

if TYPE_CHECKING:
    from .registry import AgentEntry
    from .services import Hub

_log = logging.getLogger(__name__)
M = TypeVar("M")


@dataclass
class Context:
    """What a handler may use: the hub's services and the peer that sent the message."""

    hub: Hub
    peer: Peer
    #: The frame exactly as received, for logging and forwarding without re-encoding.
    frame: bytes

    def log_in(self, message: Any, instrument: str | None = None) -> None:
        """Append the inbound message to the traffic log, as the bytes that arrived."""
        self.hub.traffic.message("in", self.peer.name, message, self.frame, instrument)

    def send(self, message: Any, *, instrument: str | None = None) -> None:
        """Send a message back to the peer."""
        self.hub.fanout.send(self.peer, message, instrument=instrument)


Handler = Callable[[Context, Any], Awaitable[None]]


class Handlers:
    """Which handler serves which message type from which kind of peer."""

    def __init__(self) -> None:
        self._table: dict[tuple[PeerKind, type[Any]], Handler] = {}

    def register(
        self,
        kind: PeerKind,
        message_type: type[M],
        handler: Callable[[Context, M], Awaitable[None]],
    ) -> None:
        """Serve `message_type` from peers of `kind` with `handler`."""
        self._table[(kind, message_type)] = handler

    async def dispatch(self, ctx: Context, message: Any) -> None:
        """Run the handler registered for this message from this kind of peer."""
        handler = self._table.get((ctx.peer.kind, type(message)))
        if handler is None:
            tag = type(message).__struct_config__.tag
            ctx.send(
                Error(code=ErrorCode.UNEXPECTED_MESSAGE, message=f"{tag!r} is not accepted here")
            )
            return
        # Credentials, grants, the control lease, absurd seqs: refused before
        # any handler runs (`auth.guard`), so no handler can forget a check.
        if await permit(ctx, message):
            await handler(ctx, message)


def default_handlers() -> Handlers:
    """The handlers of a hub: every message agents and clients may send after their hello."""
    handlers = Handlers()
    handlers.register(PeerKind.AGENT, Data, agent_data)
    handlers.register(PeerKind.AGENT, Status, agent_status)
    handlers.register(PeerKind.AGENT, Reply, agent_reply)
    handlers.register(PeerKind.AGENT, Error, agent_error)
    handlers.register(PeerKind.AGENT, Gap, agent_gap)
    handlers.register(PeerKind.AGENT, AgentState, agent_state)
    handlers.register(PeerKind.CLIENT, Subscribe, client_subscribe)
    handlers.register(PeerKind.CLIENT, Unsubscribe, client_unsubscribe)
    handlers.register(PeerKind.CLIENT, ListInstruments, client_list)
    handlers.register(PeerKind.CLIENT, Command, client_command)
    # Protocol 4: the log and histories over the socket, raw serial transcripts.
    # Imported here: the queries share the HTTP routes' checks, whose modules
    # import the services, which import this one.
    from .socket_queries import history_query, log_query

    handlers.register(PeerKind.CLIENT, QueryLog, log_query)
    handlers.register(PeerKind.CLIENT, QueryHistory, history_query)
    handlers.register(PeerKind.AGENT, RawTraffic, agent_raw)
    return handlers


# --- from agents -----------------------------------------------------------------


async def agent_data(ctx: Context, message: Data) -> None:
    """Log new samples durably, acknowledge them after commit, fan them out."""
    # Per frame: the S1/S3 benchmarks measure every call made here.
    hub = ctx.hub
    peer = ctx.peer
    agent = hub.registry.agents.get(peer.name)
    if agent is None or agent.peer is not peer:
        return  # a replaced connection: its agent resends on the new one
    if hub.corrections.versions:  # approved calibrations applied to the stream (corrections.py)
        message, ctx.frame = hub.corrections.apply(message, ctx.frame)
    run = message.run or agent.hello.run
    if agent.unlogged or hub.store.health.state != "ok":
        _forward_unlogged(ctx, agent, run, message)
        return
    registry = hub.registry
    missing = registry.needs_lookup(agent, run, message.samples)
    if missing:
        # A run this hub has not seen since it started: what did it log of it
        # before? (Frames of one connection are handled one at a time, so no
        # sample of this run is accepted meanwhile.)
        try:
            logged = await hub.store.last_seqs(run, missing)
        except StoreError as exc:
            # Not knowing what is logged, accepting could log a sample twice,
            # and dropping the frame would strand it at the agent for this
            # connection: the agent reconnects (with backoff) and resends.
            _log.warning(
                "cannot read the log to recognise resent samples; agent to reconnect",
                extra={"agent": agent.hello.agent_id, "run": run, "error": str(exc)},
            )
            hub.tasks.spawn(
                peer.disconnect(CloseCode.GOING_AWAY, "the hub's log is unavailable"),
                "kmz-log-unavailable",
            )
            return
        registry.merge_logged_seqs(run, missing, logged)
    now = hub.clock()
    accepted, duplicates, foreign = registry.accept(agent, run, message.samples, now)
    if foreign:
        ctx.send(
            Error(
                code=ErrorCode.UNKNOWN_INSTRUMENT,
                message="samples for instruments this agent did not announce were dropped: "
                + ", ".join(sorted(foreign)),
            )
        )
    key = ack_key(agent.hello.agent_id, run)
    if duplicates:
        hub.tasks.spawn(_ack_when_committed(hub, key, duplicates), "kmz-ack")
    if not accepted:
        return
    _note_undeclared_channels(ctx, accepted)
    first = accepted[0].instrument
    traffic = hub.traffic
    if message.backlog:
        # Taken while this agent had no connection: logged, and sent only to
        # subscribers that asked for the backlog; live ones would see time go
        # backwards (and, after a hub crash, samples the previous hub had
        # already forwarded).
        delivered = hub.fanout.publish_samples(accepted, None, encode_run(run), backlog=True)
        for instrument, samples in _by_instrument(accepted).items():
            frame = (
                ctx.frame
                if instrument == first and len(samples) == len(message.samples)
                else (encode(Data(samples=samples, run=run, backlog=True)))
            )
            traffic.samples(
                agent, run, instrument, frame, samples[-1].seq, delivered.get(instrument), now
            )
        return
    agent.clock.observe(accepted[-1].ts, now)
    if agent.clock.within(hub.config.clock_warning_s) == agent.clock_warned:
        _clock_changed(hub, agent)
    encoded_run = encode_run(run)
    if len(accepted) == len(message.samples) and all(s.instrument == first for s in accepted):
        # The common case: the agent's frame as it arrived, forwarded and logged.
        delivered = hub.fanout.publish_samples(accepted, ctx.frame, encoded_run)
        traffic.samples(agent, run, first, ctx.frame, accepted[-1].seq, delivered.get(first), now)
        return
    delivered = hub.fanout.publish_samples(accepted, None, encoded_run)
    for instrument, samples in _by_instrument(accepted).items():
        traffic.samples(
            agent,
            run,
            instrument,
            encode(Data(samples=samples, run=run)),
            samples[-1].seq,
            delivered.get(instrument),
            now,
        )


def _forward_unlogged(ctx: Context, agent: AgentEntry, run: str, message: Data) -> None:
    """The log is degraded: forward live samples; log and acknowledge none (the agent keeps them).

    The newest accepted seqs stay those of the log. Once the log is back, the
    agent is asked to reconnect (1001), and resends on its new connection
    what was not acknowledged: logged then, and sent to the subscribers that
    asked for the backlog. Until its connection closes, its samples are still
    forwarded, not logged.
    """
    hub = ctx.hub
    health = hub.store.health
    if not agent.unlogged:
        agent.unlogged = True
        _log.warning(
            "traffic log degraded: forwarding the agent's samples without logging them",
            extra={"agent": agent.hello.agent_id, "reason": health.reason},
        )
        ctx.send(
            Error(
                code=ErrorCode.LOG_DEGRADED,
                message=f"{health.reason or 'the traffic log is degraded'}: samples are "
                "forwarded but neither logged nor acknowledged; keep them, and resend "
                "them when the hub closes this connection",
            )
        )
    elif health.state == "ok" and not agent.resend_asked:
        agent.resend_asked = True
        _log.info("traffic log back: the agent is to resend", extra={"agent": agent.hello.agent_id})
        hub.tasks.spawn(
            ctx.peer.disconnect(
                CloseCode.GOING_AWAY, "the hub's log is back: resend what was not acknowledged"
            ),
            "kmz-log-back",
        )
    if message.backlog:
        return  # from the agent's spool: it waits there for the log
    fresh = hub.registry.fresh(agent, run, message.samples, hub.clock())
    if not fresh:
        return
    first = fresh[0].instrument
    whole = len(fresh) == len(message.samples) and all(s.instrument == first for s in fresh)
    hub.fanout.publish_samples(fresh, ctx.frame if whole else None, encode_run(run))


def _clock_changed(hub: Hub, agent: AgentEntry) -> None:
    """An agent's clock went off (its samples' times are wrong by as much), or came back.

    Logged once per crossing; `/api/agents` and `kmz agents` show it meanwhile.
    """
    agent.clock_warned = not agent.clock_warned
    extra = {
        "agent": agent.hello.agent_id,
        "offset_s": agent.clock.offset_s,
        "bound_s": hub.config.clock_warning_s,
    }
    if agent.clock_warned:
        hint = "run NTP (systemd-timesyncd, chrony) on the agent's machine"
        _log.warning("agent clock is off", extra={**extra, "hint": hint})
    else:
        _log.info("agent clock is back within bounds", extra=extra)


async def agent_state(ctx: Context, message: AgentState) -> None:
    """What the agent's spool holds, for `/api/agents` and `kmz agents`."""
    ctx.log_in(message)
    agent = ctx.hub.registry.agents.get(ctx.peer.name)
    if agent is not None and agent.peer is ctx.peer:
        agent.state = message


def _by_instrument(samples: list[Sample]) -> dict[str, list[Sample]]:
    by_instrument: dict[str, list[Sample]] = {}
    for sample in samples:
        by_instrument.setdefault(sample.instrument, []).append(sample)
    return by_instrument


async def _ack_when_committed(hub: Hub, key: str, seqs: dict[str, int]) -> None:
    # Resent samples were logged before, perhaps still in the write queue:
    # acknowledge them once that queue is committed, or the agent would keep
    # them forever. The seqs are the newest accepted, so no ack goes back.
    await hub.store.flush()
    hub.acks.committed({key: seqs})


async def agent_gap(ctx: Context, message: Gap) -> None:
    """Samples the agent dropped: logged, told to subscribers, acknowledged once committed."""
    agent = ctx.hub.registry.agents.get(ctx.peer.name)
    if agent is None or agent.peer is not ctx.peer or message.instrument not in agent.instruments:
        ctx.send(
            Error(
                code=ErrorCode.UNKNOWN_INSTRUMENT,
                message=f"gap for instrument {message.instrument!r}, "
                "which this agent did not announce",
            )
        )
        return
    ctx.log_in(message, message.instrument)
    gap = await _not_logged(ctx.hub, agent, message)
    if gap is not None:
        _log.warning(
            "agent dropped samples",
            extra={
                "agent": agent.hello.agent_id,
                "instrument": gap.instrument,
                "run": gap.run,
                "seqs": f"{gap.first_seq}..{gap.last_seq}",
                "count": gap.count,
                "reason": gap.reason,
            },
        )
        ctx.hub.fanout.publish_gap(gap)
    if message.id is not None:
        ctx.hub.tasks.spawn(_ack_gap_when_committed(ctx, message.id), "kmz-gap-ack")


async def _not_logged(hub: Hub, agent: AgentEntry, gap: Gap) -> Gap | None:
    """The part of an agent's gap that the log does not hold; None if it holds all of it.

    An agent drops the oldest samples it has not seen acknowledged, and the
    hub may have logged some of them without the agent hearing so (a hub
    killed between its commit and the ack): clients must not be told they
    missed samples the log has (tests/e2e/test_delivery_spool_limit.py).
    An agent sends each run in seq order and a gap before the backlog that
    follows it, so when a gap arrives the hub holds exactly the seqs of that
    run up to its newest: the gap's part at or below it was logged. A run's
    seqs are consecutive, so the count shrinks by as many.
    """
    registry = hub.registry
    seqs = registry.instruments[gap.instrument].seqs
    if gap.run not in registry.instruments[gap.instrument].checked:
        try:
            logged = await hub.store.last_seqs(gap.run, [gap.instrument])
        except StoreError:
            return gap  # cannot tell: say what the agent said
        registry.merge_logged_seqs(gap.run, [gap.instrument], logged)
    newest = seqs.get(gap.run, -1)
    if newest < gap.first_seq:
        return gap
    if newest >= gap.last_seq:
        return None
    return msgspec.structs.replace(
        gap,
        first_seq=newest + 1,
        count=max(0, gap.count - (newest + 1 - gap.first_seq)),
    )


async def _ack_gap_when_committed(ctx: Context, gap_id: int) -> None:
    await ctx.hub.store.flush()
    if not ctx.peer.ws.closed:
        ctx.send(Ack(seqs={}, gaps=[gap_id]))


def _note_undeclared_channels(ctx: Context, samples: list[Any]) -> None:
    """Tell the agent, once per connection, about channels its instruments did not declare."""
    instruments = ctx.hub.registry.instruments
    for sample in samples:
        # Per sample: one C-level subset test against the declared names.
        declared = instruments[sample.instrument].channel_names
        if not declared or sample.values.keys() <= declared:
            continue  # declared nothing (anything goes), or nothing new
        for name in sample.values.keys() - declared:
            key = (sample.instrument, name)
            if key in ctx.peer.noted:
                continue
            ctx.peer.noted.add(key)
            ctx.send(
                Error(
                    code=ErrorCode.INVALID_MESSAGE,
                    message=f"instrument {sample.instrument!r} sent channel {name!r}, which "
                    f"it did not declare (it declared: {', '.join(sorted(declared))}); "
                    "logged and delivered anyway",
                )
            )


async def agent_status(ctx: Context, message: Status) -> None:
    """Record an instrument's new state and tell its subscribers."""
    ctx.log_in(message, message.instrument)
    agent = ctx.hub.registry.agents.get(ctx.peer.name)
    if agent is None or agent.peer is not ctx.peer or message.instrument not in agent.instruments:
        ctx.send(
            Error(
                code=ErrorCode.UNKNOWN_INSTRUMENT,
                message=f"status for instrument {message.instrument!r}, "
                "which this agent did not announce",
            )
        )
        return
    # An agent repeats every status after a reconnect: only changes go out.
    registry = ctx.hub.registry
    if registry.set_status(message.instrument, message.state, message.reason, ctx.hub.clock()):
        # The lease is the hub's to tell, never the agent's.
        lease = registry.instruments[message.instrument].lease
        if message.lease != lease:
            message = msgspec.structs.replace(message, lease=lease)
        ctx.hub.fanout.publish_status(message)


async def agent_reply(ctx: Context, message: Reply) -> None:
    """Route a command's reply back to the client that asked."""
    ctx.log_in(message, ctx.hub.commands.instrument_of(message.id))
    if not ctx.hub.commands.complete(ctx.peer, message):
        _log.info("late or unknown reply", extra={"agent": ctx.peer.name, "id": message.id})


async def agent_error(ctx: Context, message: Error) -> None:
    """An agent reports a problem with something the hub sent: log it."""
    ctx.log_in(message)
    _log.warning(
        "agent reported an error",
        extra={"agent": ctx.peer.name, "code": message.code, "detail": message.message},
    )


# --- from clients ----------------------------------------------------------------


async def client_subscribe(ctx: Context, message: Subscribe) -> None:
    """Subscribe, answer with what now matches, send those instruments' states, and what
    the client missed if it asked (`since`, `since_ts`)."""
    ctx.log_in(message)
    hub = ctx.hub
    peer = ctx.peer
    if message.overflow == "disconnect":
        peer.disconnect_on_overflow = True  # the strictest of its subscriptions
    if message.backlog:
        peer.wants_backlog = True
    recovering = bool(message.since) or message.since_ts is not None
    if recovering:
        peer.hold()  # live samples wait until the log's have gone
    known = hub.registry.instruments
    try:
        # Statuses only for what is new to this client: a client repeating a
        # subscribe for `*` was sent every instrument's status each time, all
        # of it logged (issue 11, subscribe flood).
        matched, added = hub.subscriptions.add(peer, message.patterns, known)
    except BaseException:
        if recovering:
            peer.release([], {})
        raise
    recovered: bool | None = None
    not_recovered: list[str] = []
    frames: list[bytes] = []
    covered: dict[tuple[str, bytes], int] = {}
    if recovering:
        try:
            frames, covered, not_recovered = await recover(hub, message, matched)
        except StoreError as exc:
            _log.warning("recovery failed", extra={"peer": peer.name, "error": str(exc)})
            not_recovered = [i for i in matched if i in message.since or message.since_ts]
        recovered = not not_recovered
    ctx.send(
        Subscribed(
            id=message.id,
            patterns=hub.subscriptions.patterns(peer),
            instruments=matched,
            recovered=recovered,
            not_recovered=not_recovered,
        )
    )
    now = hub.clock()
    for instrument_id in added:
        entry = known[instrument_id]
        ctx.send(
            Status(
                instrument=instrument_id,
                state=entry.state,
                ts=now,
                reason=entry.reason,
                lease=entry.lease,
            ),
            instrument=instrument_id,
        )
    if recovering:
        peer.release(frames, covered)


#: Samples one recovery sends at most per instrument: beyond this, a client
#: reads the log (`/api/log`) and is told `recovered: false`.
MAX_RECOVERED = 100_000


async def recover(
    hub: Hub, message: Subscribe, matched: list[str]
) -> tuple[list[bytes], dict[tuple[str, bytes], int], list[str]]:
    """What the client missed, from the log: data frames, the newest seq they hold per
    (instrument, run), and the instruments whose position the log could not honour.

    Everything accepted before this call is committed first, so with the live
    samples held back since the subscription, nothing falls in between.
    """
    await hub.store.flush()
    frames: list[bytes] = []
    covered: dict[tuple[str, bytes], int] = {}
    not_recovered: list[str] = []
    # Every instrument with a position (known here or not: a position in a
    # log this hub does not have is not honoured), and with `since_ts` every
    # matched one.
    asked = dict.fromkeys([*message.since, *(matched if message.since_ts is not None else [])])
    for instrument in asked:
        position = message.since.get(instrument)
        start = position.ts if position is not None else message.since_ts
        if start is None:
            continue
        rows = await hub.store.query_samples(instrument, start, _FOREVER, limit=MAX_RECOVERED + 1)
        if position is not None:
            if not any(r.run == position.run and r.seq == position.seq for r in rows):
                not_recovered.append(instrument)  # reset, or past retention
            rows = [r for r in rows if r.run != position.run or r.seq > position.seq]
        if len(rows) > MAX_RECOVERED:
            rows = rows[:MAX_RECOVERED]
            if instrument not in not_recovered:
                not_recovered.append(instrument)
        batch: list[Sample] = []
        run: str | None = None
        for row in rows:
            if batch and (row.run != run or len(batch) >= MAX_SAMPLES_PER_FRAME):
                frames.append(encode(Data(samples=batch, run=run)))
                batch = []
            run = row.run
            sample = Sample(instrument=instrument, seq=row.seq, ts=row.ts, values=row.values)
            # Corrected as it was live: by the calibration in force at its time.
            batch.append(hub.corrections.corrected_sample(sample))
            key = (instrument, encode_run(row.run))
            covered[key] = max(covered.get(key, -1), row.seq)
        if batch:
            frames.append(encode(Data(samples=batch, run=run)))
    return frames, covered, not_recovered


#: The end of a recovery's time range: any time an agent's clock may say, and
#: one PostgreSQL's timestamps (through Python's datetime) can hold: 1e12 s
#: is the year 33658, and recovering by time failed there (ValueError).
_FOREVER = 253_402_300_799.0  # 9999-12-31 23:59:59 UTC
#: Samples per recovered data frame (as agents send at most).
MAX_SAMPLES_PER_FRAME = 1000


async def client_unsubscribe(ctx: Context, message: Unsubscribe) -> None:
    """Remove patterns (unknown ones are ignored) and answer with what remains."""
    ctx.log_in(message)
    hub = ctx.hub
    remaining = hub.subscriptions.unsubscribe(ctx.peer, message.patterns, hub.registry.instruments)
    ctx.send(
        Subscribed(
            id=message.id, patterns=hub.subscriptions.patterns(ctx.peer), instruments=remaining
        )
    )


async def client_list(ctx: Context, message: ListInstruments) -> None:
    """Answer with every known instrument."""
    ctx.log_in(message)
    # A record's `metadata` is protocol 4's: a client of 3 would refuse the field.
    hello = ctx.peer.connection.hello
    records = ctx.hub.registry.records(metadata=hello is None or hello.protocol >= 4)
    principal = ctx.hub.auth.principal(ctx.peer)
    if principal is not None and not principal.is_admin:
        records = [r for r in records if principal.may_watch(r.id)]
    ctx.send(InstrumentList(id=message.id, instruments=records))


async def client_command(ctx: Context, message: Command) -> None:
    """Forward a command to the instrument's agent, or answer at once why it cannot go."""
    ctx.log_in(message, message.instrument)
    hub = ctx.hub
    entry = hub.registry.instruments.get(message.instrument)
    refuse = hub.commands.refuse
    if entry is None:
        refuse(
            ctx.peer,
            message,
            ErrorCode.UNKNOWN_INSTRUMENT,
            f"no instrument {message.instrument!r} is known to this hub",
        )
        return
    agent = hub.registry.owner(message.instrument)
    if agent is None and entry.hub is None:  # `entry.hub`: another hub's agent (federation)
        refuse(
            ctx.peer,
            message,
            ErrorCode.INSTRUMENT_OFFLINE,
            f"instrument {message.instrument!r} is offline"
            + (f" ({entry.reason})" if entry.reason else ""),
        )
        return
    if message.name == TRANSCRIPT and agent is not None:  # the hub's own command
        forward_transcript(ctx, message, agent)
        return
    specs = {spec.name: spec for spec in entry.info.commands}
    spec = specs.get(message.name)
    if spec is None:
        refuse(
            ctx.peer,
            message,
            ErrorCode.UNKNOWN_COMMAND,
            f"instrument {message.instrument!r} has no command {message.name!r}; "
            f"it accepts: {', '.join(sorted(specs)) or 'none'}",
        )
        return
    problem = check_arguments(spec, message.args)
    if problem is not None:
        refuse(ctx.peer, message, ErrorCode.INVALID_ARGUMENTS, problem)
        return
    if agent is None:
        if entry.hub is not None:
            hub.commands.forward_remote(ctx.peer, message, entry.hub, entry.agent)
        return
    hub.commands.forward(ctx.peer, message, agent.peer)
