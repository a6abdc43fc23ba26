"""One handler per message type that agents and clients send after their hello.

Handlers receive only messages that decoded and passed the connection's state
machine; they call the hub's services (registry, router) and never the reverse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..protocol import (
    Ack,
    Command,
    Data,
    Error,
    ErrorCode,
    InstrumentList,
    ListInstruments,
    PeerKind,
    Reply,
    Sample,
    Status,
    Subscribe,
    Subscribed,
    Unsubscribe,
    encode,
)
from .peers import Peer
from .registry import Registry
from .router import Router
from .store import Record, Store

_log = logging.getLogger(__name__)


@dataclass
class Context:
    """What a handler may use: the services and the peer that sent the message."""

    registry: Registry
    router: Router
    store: Store
    clock: Callable[[], float]
    peer: Peer
    #: The frame exactly as received, for logging and forwarding without re-encoding.
    frame: bytes


Handler = Callable[[Context, Any], Awaitable[None]]
_HANDLERS: dict[tuple[PeerKind, type[Any]], Handler] = {}
_background: set[asyncio.Task[None]] = set()
M = TypeVar("M")


def handles(
    kind: PeerKind, message_type: type[M]
) -> Callable[[Callable[[Context, M], Awaitable[None]]], Callable[[Context, M], Awaitable[None]]]:
    """Register a handler for one message type from one kind of peer."""

    def register(
        handler: Callable[[Context, M], Awaitable[None]],
    ) -> Callable[[Context, M], Awaitable[None]]:
        _HANDLERS[(kind, message_type)] = handler
        return handler

    return register


async def dispatch(ctx: Context, message: Any) -> None:
    """Run the handler registered for this message from this kind of peer."""
    handler = _HANDLERS.get((ctx.peer.kind, type(message)))
    if handler is None:
        tag = type(message).__struct_config__.tag
        ctx.router.send(
            ctx.peer,
            Error(code=ErrorCode.UNEXPECTED_MESSAGE, message=f"{tag!r} is not accepted here"),
        )
        return
    await handler(ctx, message)


def log_in(ctx: Context, message: Any, instrument: str | None = None) -> None:
    """Append an inbound message to the traffic log, as the bytes that arrived."""
    ctx.router.log("in", ctx.peer.name, message, ctx.frame, instrument)


# --- from agents -----------------------------------------------------------------


@handles(PeerKind.AGENT, Data)
async def agent_data(ctx: Context, message: Data) -> None:
    """Log new samples durably, acknowledge them after commit, fan them out."""
    agent = ctx.registry.agents.get(ctx.peer.name)
    if agent is None or agent.peer is not ctx.peer:
        return
    accepted: list[Sample] = []
    duplicates: dict[str, int] = {}
    foreign: set[str] = set()
    now = ctx.clock()
    for sample in message.samples:
        if sample.instrument not in agent.instruments:
            foreign.add(sample.instrument)
            continue
        entry = ctx.registry.instruments[sample.instrument]
        if sample.seq <= entry.last_seq:
            duplicates[sample.instrument] = max(sample.seq, duplicates.get(sample.instrument, -1))
            continue
        entry.last_seq = sample.seq
        entry.last_seen = now
        accepted.append(sample)
    if foreign:
        ctx.router.send(
            ctx.peer,
            Error(
                code=ErrorCode.UNKNOWN_INSTRUMENT,
                message="samples for instruments this agent did not announce were dropped: "
                + ", ".join(sorted(foreign)),
            ),
        )
    if duplicates:
        task = asyncio.create_task(_ack_duplicates(ctx, duplicates))
        _background.add(task)
        task.add_done_callback(_background.discard)
    if not accepted:
        return
    by_instrument: dict[str, list[Sample]] = {}
    for sample in accepted:
        by_instrument.setdefault(sample.instrument, []).append(sample)
    single = len(accepted) == len(message.samples) and len(by_instrument) == 1
    delivered = ctx.router.publish_samples(accepted, ctx.frame if single else None)
    for instrument, samples in by_instrument.items():
        ctx.store.append(
            Record(
                ts=now,
                direction="in",
                peer=ctx.peer.name,
                type="data",
                message=ctx.frame if single else _encode_data(samples),
                instrument=instrument,
                delivered_to=delivered.get(instrument),
                ack=(ctx.peer.name, {instrument: samples[-1].seq}),
                run=ctx.registry.instruments[instrument].run,
            )
        )


def _encode_data(samples: list[Sample]) -> bytes:
    return encode(Data(samples=samples))


async def _ack_duplicates(ctx: Context, seqs: dict[str, int]) -> None:
    # Resent samples were logged before, perhaps still in the write queue:
    # acknowledge them once that queue is committed, or the agent would keep
    # them forever.
    await ctx.store.flush()
    ctx.router.send(ctx.peer, Ack(seqs=seqs, clock=ctx.router.monotonic()))


@handles(PeerKind.AGENT, Status)
async def agent_status(ctx: Context, message: Status) -> None:
    """Record an instrument's new state and tell its subscribers."""
    agent = ctx.registry.agents.get(ctx.peer.name)
    log_in(ctx, message, message.instrument)
    if agent is None or message.instrument not in agent.instruments:
        ctx.router.send(
            ctx.peer,
            Error(
                code=ErrorCode.UNKNOWN_INSTRUMENT,
                message=f"status for instrument {message.instrument!r}, "
                "which this agent did not announce",
            ),
        )
        return
    entry = ctx.registry.instruments[message.instrument]
    if (entry.state, entry.reason) == (message.state, message.reason):
        return  # an agent repeats every status after a reconnect: nothing changed
    entry.state = message.state
    entry.reason = message.reason
    ctx.router.publish_status(message)


@handles(PeerKind.AGENT, Reply)
async def agent_reply(ctx: Context, message: Reply) -> None:
    """Route a command's reply back to the client that asked."""
    log_in(ctx, message, ctx.router.pending_instrument(message.id))
    if not ctx.router.complete_command(ctx.peer, message):
        _log.info("late or unknown reply", extra={"agent": ctx.peer.name, "id": message.id})


@handles(PeerKind.AGENT, Error)
async def agent_error(ctx: Context, message: Error) -> None:
    """An agent reports a problem with something the hub sent: log it."""
    log_in(ctx, message)
    _log.warning(
        "agent reported an error",
        extra={"agent": ctx.peer.name, "code": message.code, "detail": message.message},
    )


# --- from clients ----------------------------------------------------------------


@handles(PeerKind.CLIENT, Subscribe)
async def client_subscribe(ctx: Context, message: Subscribe) -> None:
    """Subscribe, answer with what now matches, then send those instruments' states."""
    log_in(ctx, message)
    known = ctx.registry.instruments
    matched = ctx.router.subscribe(ctx.peer, message.patterns, known)
    ctx.router.send(
        ctx.peer,
        Subscribed(id=message.id, patterns=ctx.router.patterns(ctx.peer), instruments=matched),
    )
    for instrument_id in matched:
        entry = known[instrument_id]
        ctx.router.send(
            ctx.peer,
            Status(
                instrument=instrument_id,
                state=entry.state,
                ts=ctx.clock(),
                reason=entry.reason,
            ),
            instrument=instrument_id,
        )


@handles(PeerKind.CLIENT, Unsubscribe)
async def client_unsubscribe(ctx: Context, message: Unsubscribe) -> None:
    """Remove patterns and answer with what remains."""
    log_in(ctx, message)
    remaining = ctx.router.unsubscribe(ctx.peer, message.patterns, ctx.registry.instruments)
    ctx.router.send(
        ctx.peer,
        Subscribed(id=message.id, patterns=ctx.router.patterns(ctx.peer), instruments=remaining),
    )


@handles(PeerKind.CLIENT, ListInstruments)
async def client_list(ctx: Context, message: ListInstruments) -> None:
    """Answer with every known instrument."""
    log_in(ctx, message)
    ctx.router.send(ctx.peer, InstrumentList(id=message.id, instruments=ctx.registry.records()))


@handles(PeerKind.CLIENT, Command)
async def client_command(ctx: Context, message: Command) -> None:
    """Forward a command to the instrument's agent, or answer why it cannot go."""
    log_in(ctx, message, message.instrument)
    entry = ctx.registry.instruments.get(message.instrument)
    if entry is None:
        ctx.router.reply_error(
            ctx.peer,
            message,
            ErrorCode.UNKNOWN_INSTRUMENT,
            f"no instrument {message.instrument!r} is known to this hub",
        )
        return
    agent = ctx.registry.owner(message.instrument)
    if agent is None:
        ctx.router.reply_error(
            ctx.peer,
            message,
            ErrorCode.INSTRUMENT_OFFLINE,
            f"instrument {message.instrument!r} is offline"
            + (f" ({entry.reason})" if entry.reason else ""),
        )
        return
    known = {spec.name for spec in entry.info.commands}
    if message.name not in known:
        ctx.router.reply_error(
            ctx.peer,
            message,
            ErrorCode.UNKNOWN_COMMAND,
            f"instrument {message.instrument!r} has no command {message.name!r}; "
            f"it accepts: {', '.join(sorted(known)) or 'none'}",
        )
        return
    ctx.router.forward_command(ctx.peer, message, agent.peer)
