"""Timelines: when each instrument and agent was online, offline or faulted, and why.

Read from what the traffic log already holds, oldest first:

- ``agent_hello`` (in): the agent connected; its instruments are online.
- ``status`` (in, from the agent): an instrument faulted or recovered, with
  the agent's reason (the port vanished, no reply in time, ...).
- ``status`` (out, the hub's, logged when someone was subscribed): offline
  because the agent disconnected or was replaced.
- ``hub_start`` / ``hub_stop``: logged by this module as the hub starts and
  stops. Whatever was not offline when the hub started again went offline
  ("hub restart") with the newest entry the log held before.

An agent that connects again while its instruments were never logged
offline was lost without the hub logging so: they went offline ("agent
lost") with the newest entry logged from that agent before.

Each change has a `cause` (one of `CAUSES`, for a program) and the
`reason` as it was given (for a person).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Literal

import msgspec
from aiohttp import web

from .. import __version__
from .params import BadParameter, instrument_id, problem, time_param
from .services import HUB_KEY, Hub
from .store import Store
from .store.queries import LogQuery

State = Literal["online", "offline", "faulted"]
#: Why a state changed, as a program matches it.
CAUSES = (
    "agent connected",
    "agent disconnected",
    "agent lost",
    "hub restart",
    "hub stopped",
    "port vanished",
    "reply timeout",
    "instrument fault",
    "recovered",
)
#: The log entry types a timeline is made of.
TIMELINE_TYPES = ("agent_hello", "status", "hub_start", "hub_stop")
#: Entries read per query while folding the log.
PAGE = 1000

# The agent's words for a port that is gone (pyserial, the OS, our runner).
_PORT_GONE = re.compile(
    r"vanished|not open|could not open|no such file|errno 2\b|errno 5\b|input/output error"
    r"|device disconnected|device reports readiness|port .*(closed|lost|gone)",
    re.IGNORECASE,
)
_NO_REPLY = re.compile(r"time ?out|timed out|no (answer|reply|response)", re.IGNORECASE)


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One change of state: from `ts` (hub time) on, `state`, because of `cause`."""

    ts: float
    state: State
    cause: str
    reason: str = ""
    #: The agent serving the instrument then (instrument timelines).
    agent: str | None = None


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/timeline/{instrument}`` or ``?agent=ID``: the changes within the range."""

    kind: Literal["instrument", "agent"]
    id: str
    since: float | None
    until: float | None
    #: The state at `since` (None if nothing was logged before it), then each change.
    changes: list[Change]


class _Hello(msgspec.Struct):
    agent_id: str
    instruments: list[dict[str, object]] = []


class _Status(msgspec.Struct):
    instrument: str
    state: State
    reason: str = ""


_hello_decoder = msgspec.json.Decoder(_Hello)
_status_decoder = msgspec.json.Decoder(_Status)


def cause_of(state: State, reason: str) -> str:
    """The cause of an agent's status: the port vanished, no reply in time, a fault, recovered."""
    if state == "online":
        return "recovered"
    if _PORT_GONE.search(reason):
        return "port vanished"
    if _NO_REPLY.search(reason):
        return "reply timeout"
    return "instrument fault"


class _Fold:
    """The state of every subject while the log is read oldest first."""

    def __init__(self, store: Store, kind: Literal["instrument", "agent"], subject: str) -> None:
        self.store = store
        self.kind = kind
        self.subject = subject
        self.changes: list[Change] = []
        #: Instrument timelines: the agent serving it, as of the newest hello.
        self.agent: str | None = None
        #: Agent timelines: the instruments of its newest hello.
        self.served: set[str] = set()

    @property
    def state(self) -> State | None:
        return self.changes[-1].state if self.changes else None

    def change(self, ts: float, state: State, cause: str, reason: str = "") -> None:
        last = self.changes[-1] if self.changes else None
        if last is not None and last.state == state and (state != "faulted" or last.cause == cause):
            return  # repeated (an agent repeats its statuses after a reconnect)
        agent = self.agent if self.kind == "instrument" else None
        self.changes.append(Change(ts=ts, state=state, cause=cause, reason=reason, agent=agent))

    async def entry(
        self,
        id_: int,
        ts: float,
        type_: str,
        direction: str,
        instrument: str | None,
        message: bytes,
    ) -> None:
        """Fold one log entry in."""
        if type_ in ("hub_start", "hub_stop"):
            if self.state not in (None, "offline"):
                if type_ == "hub_stop":
                    self.change(ts, "offline", "hub stopped", "the hub stopped")
                else:
                    before = await self._newest_before(id_, None)
                    self.change(
                        before if before is not None else ts,
                        "offline",
                        "hub restart",
                        "the hub stopped without logging so; it started again",
                    )
            return
        if type_ == "agent_hello" and direction == "in":
            try:
                hello = _hello_decoder.decode(message)
            except msgspec.DecodeError:
                return
            names = {str(i.get("id")) for i in hello.instruments}
            if self.kind == "instrument" and self.subject not in names:
                return
            if self.kind == "agent" and hello.agent_id != self.subject:
                return
            if self.state not in (None, "offline"):
                before = await self._newest_before(id_, self.agent or hello.agent_id)
                self.change(
                    before if before is not None else ts,
                    "offline",
                    "agent lost",
                    "the agent's connection ended without the hub logging so",
                )
            self.agent = hello.agent_id
            self.change(ts, "online", "agent connected", f"agent {hello.agent_id} connected")
            return
        if type_ != "status" or instrument is None:
            return
        try:
            status = _status_decoder.decode(message)
        except msgspec.DecodeError:
            return
        if direction == "in":  # the agent's word about one instrument
            if self.kind == "instrument" and status.instrument == self.subject:
                self.change(ts, status.state, cause_of(status.state, status.reason), status.reason)
            return
        # The hub's: an instrument went offline with its agent (or came online).
        if status.state != "offline":
            return
        if self.kind == "instrument" and status.instrument != self.subject:
            return
        if self.kind == "agent" and status.instrument not in self.served:
            return
        cause = "agent disconnected"
        if "lost" in status.reason or "heartbeat" in status.reason:
            cause = "agent lost"
        self.change(ts, "offline", cause, status.reason)

    async def _newest_before(self, id_: int, peer: str | None) -> float | None:
        """The time of the newest entry before entry `id_` (from `peer`, if given)."""
        found = await self.store.query_log(
            LogQuery(peer=peer, after_id=id_, oldest_first=False), limit=1
        )
        return found[0].ts if found else None


async def build_timeline(
    store: Store,
    kind: Literal["instrument", "agent"],
    subject: str,
    since: float | None = None,
    until: float | None = None,
) -> Timeline:
    """The subject's timeline: its state at `since`, then each change before `until`."""
    fold = _Fold(store, kind, subject)
    after: int | None = None
    while True:
        page = await store.query_log(
            LogQuery(until=until, types=TIMELINE_TYPES, after_id=after, oldest_first=True),
            limit=PAGE,
        )
        for entry in page:
            if kind == "agent" and entry.type == "agent_hello" and entry.direction == "in":
                try:
                    hello = _hello_decoder.decode(entry.message)
                except msgspec.DecodeError:
                    hello = None
                if hello is not None and hello.agent_id == subject:
                    fold.served = {str(i.get("id")) for i in hello.instruments}
            await fold.entry(
                entry.id,
                entry.ts,
                entry.type,
                entry.direction,
                entry.instrument,
                bytes(entry.message),
            )
        if len(page) < PAGE:
            break
        after = page[-1].id
    changes = fold.changes
    if since is not None:
        earlier = [c for c in changes if c.ts < since]
        changes = earlier[-1:] + [c for c in changes if c.ts >= since]
    return Timeline(kind=kind, id=subject, since=since, until=until, changes=changes)


# --- the hub's side: start and stop logged, and the route ---------------------------


def install(app: web.Application) -> None:
    """Log the hub's start and stop, and add ``GET /api/timeline/{instrument}``, ``?agent=``."""
    app.router.add_get("/api/timeline/{instrument}", timeline)
    app.router.add_get("/api/timeline", timeline)
    app.cleanup_ctx.append(_start_and_stop)


def _log_event(hub: Hub, type_: str) -> None:
    event = {"hub": hub.config.name, "boot": hub.boot_id, "version": __version__}
    hub.traffic.event(hub.config.name, type_, msgspec.json.encode(event))


async def _start_and_stop(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    _log_event(hub, "hub_start")
    yield
    _log_event(hub, "hub_stop")


async def timeline(request: web.Request) -> web.Response:
    """`GET /api/timeline/{instrument}` or `/api/timeline?agent=ID`, with `since`, `until`."""
    hub = request.app[HUB_KEY]
    instrument = request.match_info.get("instrument")
    agent = request.query.get("agent")
    kind: Literal["instrument", "agent"] = "instrument" if instrument is not None else "agent"
    try:
        if instrument is not None:
            subject = instrument_id(instrument)
        elif agent is not None:
            subject = agent
        else:
            raise BadParameter("name an instrument (/api/timeline/ID) or an agent (?agent=ID)")
        now = hub.clock()
        since = time_param(request.query, "since", now=now)
        until = time_param(request.query, "until", now=now)
    except BadParameter as exc:
        return problem(exc)
    found = await build_timeline(hub.store, kind, subject, since, until)
    return web.Response(body=msgspec.json.encode(found), content_type="application/json")
