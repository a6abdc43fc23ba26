"""Which agents are connected, which instruments the hub knows, and each one's state.

The registry changes only through its methods; everyone else reads it
through the read-only mappings `agents` and `instruments`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from ..protocol import (
    AgentHello,
    AgentRecord,
    AgentState,
    InstrumentInfo,
    InstrumentMetadata,
    InstrumentRecord,
    InstrumentState,
    LeaseInfo,
    Sample,
)
from ..protocol.limits import Limits
from .clocks import ClockOffset
from .errors import Conflict
from .peers import Peer

#: Offline instruments a registry keeps by default (`Limits.max_remembered_instruments`).
DEFAULT_MAX_REMEMBERED = Limits().max_remembered_instruments
#: Why an instrument remembered from before a hub restart is offline.
NOT_SEEN_SINCE_START = "its agent has not connected since the hub started"


@dataclass
class InstrumentEntry:
    """The hub's knowledge of one instrument; survives its agent's disconnects and hub restarts."""

    info: InstrumentInfo
    agent: str
    state: InstrumentState = "offline"
    reason: str = ""
    #: Hub time of its newest reading; None until it sends one.
    last_seen: float | None = None
    #: Hub time since when `state` holds; None if not seen change since the hub started.
    since: float | None = None
    #: The control lease while one is held (`auth.guard` sets it).
    lease: LeaseInfo | None = None
    #: Highest seq accepted per agent run; samples at or below it are
    #: duplicates. A run missing here is looked up in the log first
    #: (`needs_lookup`). Several runs are live at once while an agent sends
    #: the backlog of earlier runs beside its current one.
    seqs: dict[str, int] = field(default_factory=dict)
    #: Runs compared with the log since its agent's connection to this hub:
    #: another hub on the same log may have logged more of a run meanwhile
    #: (the agent failed over and back), so each connection looks again.
    checked: set[str] = field(default_factory=set)
    #: The names of the channels it declared; kept with `info` by the registry.
    channel_names: frozenset[str] = frozenset()
    #: The bus id of the hub whose agent serves it, when that is another hub
    #: (`federation`); None when it is this hub's, or offline.
    hub: str | None = None

    def announced(self) -> Announced:
        """The entry as this hub announces it to the others (`federation`)."""
        return Announced(
            info=self.info,
            agent=self.agent,
            state=self.state,
            reason=self.reason,
            since=self.since,
            last_seen=self.last_seen,
            lease=self.lease,
        )

    def record(
        self,
        calibration: str = "",
        metadata: InstrumentMetadata | None = None,
        *,
        with_metadata: bool = True,
    ) -> InstrumentRecord:
        """The entry as listed to clients; `calibration` says what is wrong with its calibration.

        `with_metadata` False (protocol 3) leaves the field out; the description is the hub's.
        """
        reason = f"{self.reason}; {calibration}" if self.reason and calibration else None
        # The hub's description, once an admin set one, wins over the agent's file.
        description = (metadata.description if metadata else "") or self.info.description
        return InstrumentRecord(
            id=self.info.id,
            kind=self.info.kind,
            agent=self.agent,
            state=self.state,
            reason=reason or self.reason or calibration,
            last_seen=self.last_seen,
            description=description,
            channels=self.info.channels,
            commands=self.info.commands,
            since=self.since,
            lease=self.lease,
            metadata=metadata if metadata and with_metadata else msgspec.UNSET,
        )


class Announced(msgspec.Struct, frozen=True):
    """An instrument an agent of another hub serves, as that hub announces it."""

    info: InstrumentInfo
    agent: str
    state: InstrumentState
    reason: str = ""
    since: float | None = None
    last_seen: float | None = None
    #: Its control lease, held by that hub: the hub its agent fails over to
    #: adopts it (`auth.guard.adopt_leases`), even if nobody there watched it.
    lease: LeaseInfo | None = None


@dataclass
class AgentEntry:
    """A connected agent."""

    peer: Peer
    hello: AgentHello
    instruments: set[str] = field(default_factory=set)
    #: Hub time of its handshake.
    connected_since: float = 0.0
    #: What its spool holds, as it last said.
    state: AgentState | None = None
    #: Its clock minus the hub's, from its live samples.
    clock: ClockOffset = field(default_factory=ClockOffset)
    #: Whether the hub has warned that its clock is off (warned once per crossing).
    clock_warned: bool = False
    #: Samples of this connection were forwarded but not logged (the log was
    #: degraded): the agent holds them, and resends them on its next connection.
    unlogged: bool = False
    #: ... and it has been asked to reconnect and resend them (the log is back).
    resend_asked: bool = False


#: Runs remembered per instrument: an agent sends the backlog of at most a
#: few earlier runs beside its current one.
MAX_RUNS_PER_INSTRUMENT = 16

#: What became of one data message's samples: the new ones, in order, to log
#: and deliver; per instrument with samples already logged in this run, the
#: newest accepted seq, to acknowledge once what is queued is committed; the
#: instruments the agent did not announce (their samples were dropped). A
#: plain tuple: this is per frame, and a frozen dataclass costs 0.5 us more.
Accepted = tuple[list[Sample], dict[str, int], set[str]]


class Registry:
    """Agents and instruments, changed only through these methods."""

    def __init__(self, max_remembered: int = DEFAULT_MAX_REMEMBERED) -> None:
        self._agents: dict[str, AgentEntry] = {}
        self._instruments: dict[str, InstrumentEntry] = {}
        #: Instruments kept while no connected agent serves them, at most.
        self.max_remembered = max_remembered
        #: Per instrument, what is wrong with its calibration ("calibration
        #: expired on ..."), shown in its listed reason; see `set_calibration_notes`.
        self._calibration_notes: dict[str, str] = {}
        #: Instrument id -> the metadata an admin set at the hub; see `set_metadata`.
        self._metadata: dict[str, InstrumentMetadata] = {}

    @property
    def agents(self) -> Mapping[str, AgentEntry]:
        """Connected agents by id."""
        return self._agents

    @property
    def instruments(self) -> Mapping[str, InstrumentEntry]:
        """Every known instrument by id, online or not."""
        return self._instruments

    def remember(self, info: InstrumentInfo, agent: str, last_seen: float | None) -> None:
        """Know an instrument from before a restart: offline until its agent connects.

        Within `max_remembered`: call `evict_offline` once all are loaded.
        """
        if info.id not in self._instruments:
            self._instruments[info.id] = InstrumentEntry(
                info=info,
                agent=agent,
                reason=NOT_SEEN_SINCE_START,
                last_seen=last_seen,
                channel_names=_channel_names(info),
            )

    def check_hello(self, hello: AgentHello) -> None:
        """Raise `Conflict` if the hello claims an instrument of another connected agent."""
        for info in hello.instruments:
            entry = self._instruments.get(info.id)
            if entry is not None and entry.agent != hello.agent_id and entry.agent in self._agents:
                raise Conflict(f"instrument {info.id!r} is already served by agent {entry.agent!r}")
        # Counted in one pass: list.count per id made a 10,000-id hello
        # block the event loop for 1.2 s.
        ids = Counter(info.id for info in hello.instruments)
        duplicates = sorted(i for i, n in ids.items() if n > 1)
        if duplicates:
            raise Conflict(f"instrument ids announced twice: {', '.join(duplicates)}")

    def add_agent(self, peer: Peer, hello: AgentHello, now: float = 0.0) -> list[str]:
        """Record a connected agent; return the ids of instruments new to the hub."""
        new: list[str] = []
        entry = AgentEntry(peer=peer, hello=hello, connected_since=now)
        for info in hello.instruments:
            known = self._instruments.get(info.id)
            if known is None:
                new.append(info.id)
                known = InstrumentEntry(info=info, agent=hello.agent_id)
                self._instruments[info.id] = known
            known.info = info
            known.channel_names = _channel_names(info)
            known.agent = hello.agent_id
            known.hub = None  # an agent of this hub serves it now
            known.checked.clear()
            if known.state != "online" or known.since is None:
                known.since = now
            known.state = "online"
            known.reason = ""
            entry.instruments.add(info.id)
        self._agents[hello.agent_id] = entry
        return new

    def set_agent_instruments(
        self, agent_id: str, instruments: Sequence[InstrumentInfo], reason: str, now: float
    ) -> tuple[list[str], list[str], list[str]]:
        """A connected agent serves these instruments now (its configuration changed):
        return those new to the hub, those it serves anew, and those it no longer serves
        (offline with `reason`). Raise `Conflict` as `check_hello` does, changing nothing."""
        entry = self._agents[agent_id]
        hello = msgspec.structs.replace(entry.hello, instruments=list(instruments))
        self.check_hello(hello)
        ids = {info.id for info in instruments}
        gone = sorted(entry.instruments - ids)
        for instrument_id in gone:
            known = self._instruments[instrument_id]
            known.state, known.reason, known.since = "offline", reason, now
        entry.hello = hello
        entry.instruments &= ids
        new: list[str] = []
        added: list[str] = []
        for info in instruments:
            known_ = self._instruments.get(info.id)
            if known_ is None:
                known_ = self._instruments[info.id] = InstrumentEntry(info=info, agent=agent_id)
                new.append(info.id)
            known_.info, known_.agent = info, agent_id
            known_.channel_names = _channel_names(info)
            if info.id not in entry.instruments:
                known_.state, known_.reason, known_.since = "online", "", now
                entry.instruments.add(info.id)
                added.append(info.id)
        return new, added, gone

    def needs_lookup(self, agent: AgentEntry, run: str, samples: Sequence[Sample]) -> list[str]:
        """Instruments of these samples for which the hub has not seen `run` since it started."""
        missing: list[str] = []
        instruments = self._instruments
        for sample in samples:
            instrument_id = sample.instrument
            if (
                instrument_id in agent.instruments
                and run not in instruments[instrument_id].checked
                and instrument_id not in missing
            ):
                missing.append(instrument_id)
        return missing

    def merge_logged_seqs(
        self, run: str, instruments: Iterable[str], logged: Mapping[str, int]
    ) -> None:
        """Take what the log holds of a run: samples up to these seqs are duplicates.

        Every instrument looked up gets an entry for `run` (-1 if nothing was
        logged), so it is looked up once.
        """
        for instrument_id in instruments:
            entry = self._instruments.get(instrument_id)
            if entry is None:
                continue
            # The higher of both: this hub's own newest may not be committed yet.
            seq = max(entry.seqs.get(run, -1), logged.get(instrument_id, -1))
            entry.seqs[run] = seq
            entry.checked.add(run)
            if len(entry.seqs) > MAX_RUNS_PER_INSTRUMENT:
                # The oldest first (dicts keep insertion order): long since
                # committed, so the log answers for it if it comes back.
                entry.checked.discard(oldest := next(iter(entry.seqs)))
                del entry.seqs[oldest]

    def remove_agent(
        self, agent_id: str, peer: Peer, reason: str, now: float | None = None
    ) -> list[str]:
        """Forget a disconnected agent; return the instruments that went offline."""
        entry = self._agents.get(agent_id)
        if entry is None or entry.peer is not peer:
            return []  # already replaced by a newer connection of the same agent
        del self._agents[agent_id]
        offline = []
        for instrument_id in sorted(entry.instruments):
            instrument = self._instruments[instrument_id]
            instrument.state = "offline"
            instrument.reason = reason
            instrument.since = now
            offline.append(instrument_id)
        return offline

    def accept(
        self, agent: AgentEntry, run: str, samples: Sequence[Sample], now: float
    ) -> Accepted:
        """Sort an agent's samples of one run into new ones, ones already logged, and foreign ones.

        Within a run seqs only grow: a sample at or below the newest accepted
        seq of its instrument was logged before (the agent resends what was not
        acknowledged when its connection dropped). `needs_lookup` and
        `merge_logged_seqs` come first for a run not seen since the hub started.
        """
        served = agent.instruments
        instruments = self._instruments
        accepted: list[Sample] = []
        duplicates: dict[str, int] = {}
        foreign: set[str] = set()
        for sample in samples:
            instrument_id = sample.instrument
            if instrument_id not in served:
                foreign.add(instrument_id)
                continue
            seqs = instruments[instrument_id].seqs
            last = seqs.get(run, -1)
            if sample.seq <= last:
                duplicates[instrument_id] = last
                continue
            seqs[run] = sample.seq
            instruments[instrument_id].last_seen = now
            accepted.append(sample)
        return accepted, duplicates, foreign

    def fresh(
        self, agent: AgentEntry, run: str, samples: Sequence[Sample], now: float
    ) -> list[Sample]:
        """The samples `accept` would take, without taking them: forwarded, not logged.

        While the log is degraded: the newest accepted seqs stay those of the
        log, so that the resent samples are logged when the log is back.
        """
        served = agent.instruments
        instruments = self._instruments
        fresh: list[Sample] = []
        for sample in samples:
            if sample.instrument in served:
                entry = instruments[sample.instrument]
                if sample.seq > entry.seqs.get(run, -1):
                    entry.last_seen = now
                    fresh.append(sample)
        return fresh

    def set_status(
        self, instrument_id: str, state: InstrumentState, reason: str, now: float | None = None
    ) -> bool:
        """Record an instrument's state (a new one since `now`); return whether it changed."""
        entry = self._instruments[instrument_id]
        if (entry.state, entry.reason) == (state, reason):
            return False
        if entry.state != state:
            entry.since = now
        entry.state, entry.reason = state, reason
        return True

    def served_count(self, besides: str = "") -> int:
        """How many instruments connected agents serve (but agent `besides`)."""
        return sum(len(a.instruments) for i, a in self._agents.items() if i != besides)

    def evict_offline(self) -> list[str]:
        """Forget offline instruments beyond `max_remembered`; return their ids.

        Those never seen with data go first (announced once, perhaps by a
        registration flood), then the longest silent.
        """
        served = {i for agent in self._agents.values() for i in agent.instruments}
        served.update(i for i, e in self._instruments.items() if e.hub is not None)
        excess = len(self._instruments) - len(served) - self.max_remembered
        if excess <= 0:
            return []
        offline = [e for i, e in self._instruments.items() if i not in served]
        offline.sort(key=lambda e: (e.last_seen is not None, e.last_seen or 0.0))
        evicted = [e.info.id for e in offline[:excess]]
        for instrument_id in evicted:
            del self._instruments[instrument_id]
        return evicted

    def forget(self, instrument_id: str) -> bool:
        """Drop an instrument whose agent is not connected; False if unknown or online."""
        if instrument_id not in self._instruments or self.owner(instrument_id) is not None:
            return False
        del self._instruments[instrument_id]
        return True

    def set_remote(
        self, hub: str, announced: Sequence[Announced], gone_reason: str
    ) -> tuple[list[str], list[str]]:
        """Take what another hub's agents serve now; return the instruments new to
        this hub, and those whose state changed (sorted both).

        An instrument an agent of this hub serves stays this hub's. One the
        hub announced before and no longer does goes offline with `gone_reason`
        (unless its status already said so).
        """
        new: list[str] = []
        changed: list[str] = []
        listed = set()
        for item in announced:
            instrument_id = item.info.id
            listed.add(instrument_id)
            entry = self._instruments.get(instrument_id)
            if entry is None:
                entry = self._instruments[instrument_id] = InstrumentEntry(
                    info=item.info, agent=item.agent, state=item.state
                )
                new.append(instrument_id)
            elif self.owner(instrument_id) is not None:
                continue
            elif (entry.state, entry.reason, entry.lease) != (item.state, item.reason, item.lease):
                changed.append(instrument_id)
            if entry.info != item.info:
                entry.info = item.info
                entry.channel_names = _channel_names(item.info)
            entry.agent = item.agent
            entry.hub = hub
            entry.state, entry.reason, entry.since = item.state, item.reason, item.since
            entry.lease = item.lease
            if item.last_seen is not None and (entry.last_seen or 0.0) < item.last_seen:
                entry.last_seen = item.last_seen
        for instrument_id, entry in self._instruments.items():
            if entry.hub == hub and instrument_id not in listed:
                entry.hub = None
                if entry.state != "offline":
                    entry.state, entry.reason = "offline", gone_reason
                    changed.append(instrument_id)
        return sorted(new), sorted(changed)

    def drop_remote(self, hub: str, reason: str, now: float) -> list[str]:
        """Another hub went away: its instruments go offline; return those that were not."""
        offline = []
        for instrument_id, entry in sorted(self._instruments.items()):
            if entry.hub == hub:
                entry.hub = None
                if entry.state != "offline":
                    entry.state, entry.reason, entry.since = "offline", reason, now
                    offline.append(instrument_id)
        return offline

    def saw_remote(self, instrument_id: str, now: float) -> None:
        """Data of an instrument another hub serves arrived (its `last_seen`)."""
        entry = self._instruments.get(instrument_id)
        if entry is not None and entry.hub is not None:
            entry.last_seen = now

    def served_here(self) -> list[InstrumentEntry]:
        """The instruments this hub's connected agents serve, sorted by id."""
        ids = sorted(i for agent in self._agents.values() for i in agent.instruments)
        return [self._instruments[i] for i in ids]

    def owner(self, instrument_id: str) -> AgentEntry | None:
        """The connected agent serving an instrument, if any."""
        entry = self._instruments.get(instrument_id)
        if entry is None:
            return None
        agent = self._agents.get(entry.agent)
        return agent if agent is not None and instrument_id in agent.instruments else None

    def agent_records(self, clock_bound_s: float) -> list[AgentRecord]:
        """Connected agents, sorted by id, with what their spools hold and their clocks."""
        records = []
        for agent_id in sorted(self._agents):
            entry = self._agents[agent_id]
            state = entry.state
            run, prefix = entry.hello.run, f"{entry.hello.run}."
            logged = {}
            for instrument_id in sorted(entry.instruments):
                runs = self._instruments[instrument_id].seqs
                # The newest run of this process (the last one inserted).
                mine = [seq for r, seq in runs.items() if r == run or r.startswith(prefix)]
                if mine and mine[-1] >= 0:
                    logged[instrument_id] = mine[-1]
            offset = entry.clock.offset_s
            records.append(
                AgentRecord(
                    id=agent_id,
                    software=entry.hello.software,
                    run=entry.hello.run,
                    connected_since=entry.connected_since,
                    instruments=sorted(entry.instruments),
                    spool_depth=state.spool_depth if state else None,
                    spool_oldest=state.spool_oldest if state else None,
                    dropped=state.dropped if state else None,
                    clock_offset_s=round(offset, 4) if offset is not None else None,
                    clock_ok=entry.clock.within(clock_bound_s),
                    logged_seqs=logged,
                )
            )
        return records

    def records(
        self, ids: Iterable[str] | None = None, *, metadata: bool = True
    ) -> list[InstrumentRecord]:
        """Known instruments (all, or those in `ids`), by id; `metadata` False for protocol 3."""
        chosen = self._instruments if ids is None else set(ids) & self._instruments.keys()
        notes = self._calibration_notes
        held = self._metadata
        return [
            self._instruments[i].record(notes.get(i, ""), held.get(i), with_metadata=metadata)
            for i in sorted(chosen)
        ]

    def set_lease(self, instrument_id: str, lease: LeaseInfo | None) -> None:
        """Record who holds an instrument's control lease (`auth.leases` decides)."""
        entry = self._instruments.get(instrument_id)
        if entry is not None:
            entry.lease = lease

    def set_calibration_notes(self, notes: Mapping[str, str]) -> None:
        """Replace what is said of instruments' calibrations (the calibration service's view)."""
        self._calibration_notes = dict(notes)

    def set_metadata(self, metadata: Mapping[str, InstrumentMetadata]) -> None:
        """Replace the metadata admins set at the hub (`instrument_metadata`'s view)."""
        self._metadata = dict(metadata)


def _channel_names(info: InstrumentInfo) -> frozenset[str]:
    return frozenset(c.name for c in info.channels)
