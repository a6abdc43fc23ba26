"""Which agents are connected, which instruments they serve, and each instrument's state."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..protocol import AgentHello, InstrumentInfo, InstrumentRecord, InstrumentState
from .peers import Peer


@dataclass
class InstrumentEntry:
    """The hub's knowledge of one instrument; survives its agent's disconnects."""

    info: InstrumentInfo
    agent: str
    state: InstrumentState = "offline"
    reason: str = ""
    last_seen: float | None = None
    #: Highest seq accepted in `run`; samples at or below it are duplicates.
    last_seq: int = -1
    run: str = ""

    def record(self) -> InstrumentRecord:
        """The entry as listed to clients."""
        return InstrumentRecord(
            id=self.info.id,
            kind=self.info.kind,
            agent=self.agent,
            state=self.state,
            reason=self.reason,
            last_seen=self.last_seen,
            description=self.info.description,
            channels=self.info.channels,
            commands=self.info.commands,
        )


@dataclass
class AgentEntry:
    """A connected agent."""

    peer: Peer
    hello: AgentHello
    instruments: set[str] = field(default_factory=set)


class Conflict(Exception):
    """An agent announced an instrument another connected agent serves."""


class Registry:
    """Agents and instruments; only handlers change it, through these methods."""

    def __init__(self) -> None:
        self.agents: dict[str, AgentEntry] = {}
        self.instruments: dict[str, InstrumentEntry] = {}

    def check_hello(self, hello: AgentHello) -> None:
        """Raise `Conflict` if the hello claims an instrument of another connected agent."""
        for info in hello.instruments:
            entry = self.instruments.get(info.id)
            if entry is not None and entry.agent != hello.agent_id and entry.agent in self.agents:
                raise Conflict(f"instrument {info.id!r} is already served by agent {entry.agent!r}")
        ids = [info.id for info in hello.instruments]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise Conflict(f"instrument ids announced twice: {', '.join(duplicates)}")

    def add_agent(self, peer: Peer, hello: AgentHello, now: float) -> list[str]:
        """Record a connected agent; return the ids of instruments new to the hub."""
        new: list[str] = []
        entry = AgentEntry(peer=peer, hello=hello)
        for info in hello.instruments:
            known = self.instruments.get(info.id)
            if known is None:
                new.append(info.id)
                known = InstrumentEntry(info=info, agent=hello.agent_id)
                self.instruments[info.id] = known
            known.info = info
            known.agent = hello.agent_id
            known.state = "online"
            known.reason = ""
            known.last_seen = now
            if known.run != hello.run or not hello.run:
                known.run = hello.run
                known.last_seq = -1
            entry.instruments.add(info.id)
        self.agents[hello.agent_id] = entry
        return new

    def remove_agent(self, agent_id: str, peer: Peer, reason: str) -> list[str]:
        """Forget a disconnected agent; return the instruments that went offline."""
        entry = self.agents.get(agent_id)
        if entry is None or entry.peer is not peer:
            return []  # already replaced by a newer connection of the same agent
        del self.agents[agent_id]
        offline = []
        for instrument_id in sorted(entry.instruments):
            instrument = self.instruments[instrument_id]
            instrument.state = "offline"
            instrument.reason = reason
            offline.append(instrument_id)
        return offline

    def owner(self, instrument_id: str) -> AgentEntry | None:
        """The connected agent serving an instrument, if any."""
        entry = self.instruments.get(instrument_id)
        if entry is None:
            return None
        return self.agents.get(entry.agent)

    def records(self) -> list[InstrumentRecord]:
        """Every known instrument, sorted by id."""
        return [self.instruments[i].record() for i in sorted(self.instruments)]
