"""The checks between a decoded message and its handler, and at the handshake.

`admit` decides a hello (who is it, may they be this agent with these
instruments); `permit` decides every later message against the peer's
principal as it stands now; `enforce` applies a changed or revoked principal
to an open connection. Every refusal is answered with a code (`forbidden`,
`unauthorized`, `lease_held`, `seq_out_of_range`), logged as a `refused`
entry of the traffic log with the frame that was refused, and nothing of it
reaches an agent.

The control lease lives here too: ``lease`` and ``release`` are command names
the hub answers itself, for any instrument (an instrument's own command of
that name is shadowed). ``lease`` takes or renews the lease (argument
``duration_s``, default 300), ``release`` gives it back; an admin's ``release``
ends anyone's. Everyone watching the instrument sees a `status` whose reason
names the holder and expiry, and again when it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...protocol import (
    TRANSCRIPT,
    AgentHello,
    ClientHello,
    CloseCode,
    Command,
    Data,
    Error,
    ErrorCode,
    ErrorInfo,
    LeaseInfo,
    ListInstruments,
    PeerKind,
    QueryHistory,
    QueryLog,
    Reply,
    Status,
    Subscribe,
)
from ..store import StoreError
from .leases import DEFAULT_LEASE_S, Lease
from .permissions import Principal, Role

if TYPE_CHECKING:
    from ..handlers import Context
    from ..peers import Peer
    from ..services import Hub

_log = logging.getLogger(__name__)

#: A sample whose seq is further than this beyond the newest seq logged of its
#: instrument and run is refused: one sample at seq 10^15 would otherwise make
#: every later real sample look like a duplicate, silencing the instrument for
#: good. 10^6 is 28 hours at 10 Hz, far more than an agent's spool holds back.
MAX_SEQ_JUMP = 1_000_000

#: Hub-answered command names (the control lease).
LEASE, RELEASE = "lease", "release"


@dataclass(frozen=True, slots=True)
class AuthRefusal:
    """A hello refused for its credentials: send `error`, close with `close`."""

    error: Error
    close: int


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if one was given."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


def admit(
    hub: Hub, hello: AgentHello | ClientHello, header_token: str | None
) -> Principal | AuthRefusal:
    """Who the peer of this hello is, or why it may not join."""
    auth = hub.auth
    if header_token is not None and hello.token and hello.token != header_token:
        return _unauthorized("two different tokens (Authorization header and hello)")
    token = hello.token or header_token
    principal = auth.authenticate(token)
    if isinstance(principal, str):
        if not auth.ready:
            return AuthRefusal(
                Error(code=ErrorCode.INTERNAL_ERROR, message=principal), CloseCode.TRY_AGAIN_LATER
            )
        return _unauthorized(principal)
    if isinstance(hello, AgentHello):
        why = principal.may_announce(hello.agent_id, (i.id for i in hello.instruments))
        if why is not None:
            return _forbidden(why)
    elif principal.role is Role.AGENT:
        return _forbidden("an agent token cannot be used by a client")
    return principal


def _unauthorized(why: str) -> AuthRefusal:
    return AuthRefusal(Error(code=ErrorCode.UNAUTHORIZED, message=why), CloseCode.UNAUTHORIZED)


def _forbidden(why: str) -> AuthRefusal:
    return AuthRefusal(Error(code=ErrorCode.FORBIDDEN, message=why), CloseCode.UNAUTHORIZED)


async def permit(ctx: Context, message: Any) -> bool:
    """Whether the handler may run; if not, the peer was answered and the refusal logged."""
    hub, peer = ctx.hub, ctx.peer
    principal = hub.auth.principal(peer)
    if principal is None:
        _refuse(ctx, message, ErrorCode.UNAUTHORIZED, "this connection's token no longer holds")
        return False
    if peer.kind is PeerKind.AGENT:
        if isinstance(message, Data):
            return await _seqs_in_range(ctx, message)
        return True
    request_id = getattr(message, "id", None)
    if isinstance(message, Subscribe):
        beyond = [p for p in message.patterns if not principal.may_subscribe(p)]
        if beyond:
            grant = ", ".join(principal.instruments)
            _refuse(
                ctx,
                message,
                ErrorCode.FORBIDDEN,
                f"{principal.name} may not watch {', '.join(beyond)} (may watch: {grant}; "
                "subscribe to those patterns or to single ids); nothing was subscribed",
            )
            return False
        return True
    if isinstance(message, Command):
        if message.name in (LEASE, RELEASE):
            _lease_command(ctx, message, principal)
            return False
        if message.name == TRANSCRIPT:
            # Whoever may drive the instrument at all, whatever commands their grant names.
            if principal.is_admin or (
                principal.at_least(Role.OPERATOR) and principal.may_watch(message.instrument)
            ):
                return True
            ctx.log_in(message, message.instrument)
            _refuse(
                ctx,
                message,
                ErrorCode.FORBIDDEN,
                f"{principal.name} ({principal.role}) may not take a transcript of "
                f"{message.instrument!r}",
            )
            return False
        if not principal.may_command(message.instrument, message.name):
            _refuse(
                ctx,
                message,
                ErrorCode.FORBIDDEN,
                f"{principal.name} ({principal.role}) may not run {message.name!r} on "
                f"{message.instrument!r}",
            )
            return False
        lease = hub.auth.leases.permits(message.instrument, principal.name, hub.clock())
        if lease is not None:
            _refuse(ctx, message, ErrorCode.LEASE_HELD, _held(lease))
            return False
        return True
    if isinstance(message, QueryLog | QueryHistory):
        # As `auth.web` decides for GET /api/log and /api/history/ID.
        if isinstance(message, QueryHistory):
            allowed = principal.may_watch(message.instrument)
            why = f"{principal.name} may not read the history of {message.instrument!r}"
        else:
            allowed = principal.is_admin or (
                message.instrument is not None and principal.may_subscribe(message.instrument)
            )
            why = f"{principal.name} may not read the log of {message.instrument!r}"
            if message.instrument is None:
                why = "the whole log needs admin; name an instrument"
        if not allowed:
            ctx.log_in(message)
            _refuse(ctx, message, ErrorCode.FORBIDDEN, why)
            return False
        return True
    if (
        isinstance(message, ListInstruments)
        or request_id is None
        or principal.at_least(Role.VIEWER)
    ):
        return True
    _refuse(ctx, message, ErrorCode.FORBIDDEN, f"{principal.name} may not do this")
    return False


def visible(hub: Hub, peer: Peer, instrument_id: str) -> bool:
    """Whether `peer` may see `instrument_id` (in lists, subscriptions, history)."""
    principal = hub.auth.principal(peer)
    return principal is not None and principal.may_watch(instrument_id)


async def _seqs_in_range(ctx: Context, message: Data) -> bool:
    hub = ctx.hub
    registry = hub.registry
    agent = registry.agents.get(ctx.peer.name)
    if agent is None or agent.peer is not ctx.peer:
        return True  # a replaced connection: the handler drops its data
    run = message.run or agent.hello.run
    instruments = registry.instruments
    # Per frame, one pass: the S1/S3 benchmarks measure every call made here.
    missing: list[str] = []
    for sample in message.samples:
        if sample.corrected or sample.calibration is not None:
            return _forged_correction(ctx, sample.instrument)
        entry = instruments.get(sample.instrument)
        if entry is None:
            continue  # not announced: the handler refuses it
        newest = entry.seqs.get(run)
        if newest is None:
            if sample.instrument in agent.instruments and sample.instrument not in missing:
                missing.append(sample.instrument)
        elif newest >= 0 and sample.seq > newest + MAX_SEQ_JUMP:
            return _absurd(ctx, run, sample.instrument, sample.seq, newest)
    if missing:
        # A run not seen since the hub started (the handler would look it up
        # next): what the log holds of it is the newest to judge by, or the
        # first frame after a hub restart could still poison the instrument.
        try:
            logged = await hub.store.last_seqs(run, missing)
        except StoreError:
            return True  # the data handler finds the log unreadable too, and says so
        registry.merge_logged_seqs(run, missing, logged)
        for sample in message.samples:
            if sample.instrument in missing:
                newest = instruments[sample.instrument].seqs.get(run, -1)
                if newest >= 0 and sample.seq > newest + MAX_SEQ_JUMP:
                    return _absurd(ctx, run, sample.instrument, sample.seq, newest)
    return True


def _absurd(ctx: Context, run: str, instrument: str, seq: int, newest: int) -> bool:
    """Refuse a data message for one absurd seq, and report it; always False."""
    error = Error(
        code=ErrorCode.SEQ_OUT_OF_RANGE,
        message=f"sample seq {seq} of {instrument!r} is more than {MAX_SEQ_JUMP} beyond the "
        f"newest logged ({newest}) in run {run!r}; none of this message was accepted",
    )
    _log.warning(
        "absurd seq refused", extra={"agent": ctx.peer.name, "instrument": instrument, "seq": seq}
    )
    ctx.hub.traffic.refused(ctx.peer.name, error, ctx.frame)
    ctx.send(error)
    return False


def _forged_correction(ctx: Context, instrument: str) -> bool:
    """Refuse a data message whose sample claims a calibration's correction; always False.

    Only the hub applies calibrations (`corrections`): an agent that sent
    `corrected` values could pass off any number as a certified one.
    """
    error = Error(
        code=ErrorCode.INVALID_MESSAGE,
        message=f"a sample of {instrument!r} carries 'corrected' or 'calibration': only the hub "
        "applies calibrations; none of this message was accepted",
    )
    _log.warning(
        "forged correction refused", extra={"agent": ctx.peer.name, "instrument": instrument}
    )
    ctx.hub.traffic.refused(ctx.peer.name, error, ctx.frame)
    ctx.send(error)
    return False


def _refuse(ctx: Context, message: Any, code: ErrorCode, text: str) -> None:
    """Answer a refused message (a failed reply for a command), and log it as refused."""
    hub = ctx.hub
    error = Error(code=code, message=text, id=getattr(message, "id", None))
    hub.traffic.refused(ctx.peer.name, error, ctx.frame)
    _log.info("refused", extra={"peer": ctx.peer.name, "code": code, "type": _tag(message)})
    if isinstance(message, Command):
        hub.commands.refuse(ctx.peer, message, code, text)
    else:
        ctx.send(error)


def _lease_command(ctx: Context, message: Command, principal: Principal) -> None:
    hub = ctx.hub
    ctx.log_in(message, message.instrument)
    # Whoever may drive the instrument at all may lease it, whatever commands
    # their grant names.
    if not (principal.at_least(Role.OPERATOR) and principal.may_watch(message.instrument)):
        _refuse(
            ctx,
            message,
            ErrorCode.FORBIDDEN,
            f"{principal.name} ({principal.role}) may not {message.name} {message.instrument!r}",
        )
        return
    if message.instrument not in hub.registry.instruments:
        hub.commands.refuse(
            ctx.peer,
            message,
            ErrorCode.UNKNOWN_INSTRUMENT,
            f"no instrument {message.instrument!r} is known to this hub",
        )
        return
    entry = hub.registry.instruments[message.instrument]
    if entry.hub is not None and hub.commands.remote is not None:
        # Another hub's agent serves it: that hub holds its lease, and takes
        # or releases it for this user (`federation`, `remote_lease`).
        hub.commands.forward_remote(ctx.peer, message, entry.hub, entry.agent)
        return
    leases, now = hub.auth.leases, hub.clock()
    if message.name == LEASE:
        duration = message.args.get("duration_s", DEFAULT_LEASE_S)
        if not isinstance(duration, int | float) or isinstance(duration, bool) or duration <= 0:
            hub.commands.refuse(
                ctx.peer, message, ErrorCode.INVALID_ARGUMENTS, "duration_s must be seconds > 0"
            )
            return
        lease = leases.take(message.instrument, principal.name, float(duration), now)
        if lease.holder != principal.name:
            _refuse(ctx, message, ErrorCode.LEASE_HELD, _held(lease))
            return
        _answer(ctx, message, {"holder": lease.holder, "expires": lease.expires})
        publish_lease(hub, message.instrument, lease)
        return
    if not leases.release(message.instrument, principal.name, now, force=principal.is_admin):
        current = leases.holder(message.instrument, now)
        if current is not None:
            _refuse(ctx, message, ErrorCode.LEASE_HELD, _held(current))
            return
        _answer(ctx, message, {"holder": None, "expires": None})
        return
    _answer(ctx, message, {"holder": None, "expires": None})
    publish_lease(hub, message.instrument, None)


def remote_lease(hub: Hub, command: Command, user: str, admin: bool) -> Reply:
    """Take or release, for `user` of another hub, the lease of an instrument this hub's
    agent serves: the answer `_lease_command` gives its own clients, as a `Reply`."""

    def refused(code: ErrorCode, message: str) -> Reply:
        return Reply(id=command.id, ok=False, error=ErrorInfo(code=code, message=message))

    leases, now, instrument = hub.auth.leases, hub.clock(), command.instrument
    if command.name == LEASE:
        duration = command.args.get("duration_s", DEFAULT_LEASE_S)
        if not isinstance(duration, int | float) or isinstance(duration, bool) or duration <= 0:
            return refused(ErrorCode.INVALID_ARGUMENTS, "duration_s must be seconds > 0")
        lease = leases.take(instrument, user, float(duration), now)
        if lease.holder != user:
            return refused(ErrorCode.LEASE_HELD, _held(lease))
        publish_lease(hub, instrument, lease)
        return Reply(id=command.id, ok=True, result={"holder": user, "expires": lease.expires})
    if not leases.release(instrument, user, now, force=admin):
        current = leases.holder(instrument, now)
        if current is not None:
            return refused(ErrorCode.LEASE_HELD, _held(current))
        return Reply(id=command.id, ok=True, result={"holder": None, "expires": None})
    publish_lease(hub, instrument, None)
    return Reply(id=command.id, ok=True, result={"holder": None, "expires": None})


def lease_stops(hub: Hub, command: Command, user: str) -> Reply | None:
    """The `lease_held` answer if this hub's lease on the instrument stops `user`, else None."""
    lease = hub.auth.leases.permits(command.instrument, user, hub.clock())
    if lease is None:
        return None
    error = ErrorInfo(code=ErrorCode.LEASE_HELD, message=_held(lease))
    return Reply(id=command.id, ok=False, error=error)


def _answer(ctx: Context, message: Command, result: dict[str, Any]) -> None:
    ctx.peer.connection.complete_command(message.id)
    ctx.send(Reply(id=message.id, ok=True, result=result), instrument=message.instrument)


def publish_lease(hub: Hub, instrument: str, lease: Lease | None) -> None:
    """Tell everyone watching `instrument` who holds its lease now: a status with its `lease`.

    The instrument's state and reason are its own, unchanged; its record
    (`instrument_list`, `/api/instruments`) and every status the hub sends of
    it carry the lease while it holds.
    """
    entry = hub.registry.instruments.get(instrument)
    if entry is None:
        return
    hub.registry.set_lease(
        instrument, LeaseInfo(holder=lease.holder, until=lease.expires) if lease else None
    )
    hub.fanout.publish_status(
        Status(
            instrument=instrument,
            state=entry.state,
            ts=hub.clock(),
            reason=entry.reason,
            lease=entry.lease,
        )
    )


def adopt_leases(hub: Hub, instruments: Iterable[str]) -> None:
    """Hold the leases that another hub held on instruments an agent of this hub now serves.

    Called as the agent joins, before any command can reach it: the lease
    this hub last heard of (`InstrumentEntry.lease`, from the other hub's
    status or presence) holds here with the same holder and expiry, so a
    failover does not free an instrument its operator leased. One that ran
    out meanwhile is gone. For an instrument this hub served all along, the
    lease it heard of is its own: nothing changes.
    """
    leases, now = hub.auth.leases, hub.clock()
    for instrument in instruments:
        entry = hub.registry.instruments.get(instrument)
        if entry is None or entry.lease is None:
            continue
        known = entry.lease
        if leases.holder(instrument, now) is not None:
            continue  # this hub's own, already announced
        lease = leases.adopt(instrument, known.holder, known.until, now)
        if lease is not None:
            _log.info("lease adopted", extra={"instrument": instrument, "holder": lease.holder})
        publish_lease(hub, instrument, lease)


def expire_leases(hub: Hub) -> None:
    """End the leases that ran out, telling their watchers."""
    for lease in hub.auth.leases.expired(hub.clock()):
        publish_lease(hub, lease.instrument, None)


def _held(lease: Lease) -> str:
    until = time.strftime("%H:%M:%S", time.gmtime(lease.expires))
    return f"leased by {lease.holder} until {until} UTC"


def enforce(hub: Hub, peer: Peer, change: Principal | str) -> None:
    """Apply a changed principal to an open connection: close it, or narrow its subscriptions."""
    if isinstance(change, str):
        error = Error(code=ErrorCode.UNAUTHORIZED, message=change)
        hub.subscriptions.remove_peer(peer)
        hub.traffic.refused(peer.name, error, b"")
        hub.fanout.send(peer, error)
        _log.warning("credentials withdrawn", extra={"peer": peer.name, "reason": change})
        hub.tasks.spawn(peer.disconnect(CloseCode.UNAUTHORIZED, change), "kmz-revoke")
        return
    if peer.kind is PeerKind.AGENT:
        entry = hub.registry.agents.get(peer.name)
        instruments = entry.instruments if entry is not None else ()
        why = change.may_announce(peer.name, instruments)
        if why is not None:
            enforce(hub, peer, why)
        return
    beyond = [p for p in hub.subscriptions.patterns(peer) if not change.may_subscribe(p)]
    if beyond:
        hub.subscriptions.unsubscribe(peer, beyond, hub.registry.instruments)
        hub.fanout.send(
            peer,
            Error(
                code=ErrorCode.FORBIDDEN,
                message=f"{change.name} may no longer watch {', '.join(beyond)}: unsubscribed",
            ),
        )


def _tag(message: Any) -> str:
    return str(type(message).__struct_config__.tag)
