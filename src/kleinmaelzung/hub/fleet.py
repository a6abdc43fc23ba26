"""The fleet: every agent the hub has seen, online or not, and the configurations it holds
for them; the only writer of both.

What the registry knows of connected agents (spools, clocks) is joined here
with what outlives a connection: host, software, connection history, the
configuration revision each agent runs and whether it accepts one from the
hub. A change of configuration goes out as a `config_push` and waits for the
agent's `config_result`; each one, refused or run, is in the traffic log
(type `agent_config`) with who, the diff and the agent's outcome.

The state is kept behind `FleetStore` (a JSON file in the hub's data
directory: a few KB per agent, written after each change, off the loop).
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
import json
import logging
import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

from ..protocol import (
    AgentConfigView,
    AgentHello,
    AgentInfo,
    AgentRecord,
    ConfigOutcome,
    ConfigPush,
    ConfigResult,
    ErrorCode,
    ErrorInfo,
    RevisionInfo,
)

if TYPE_CHECKING:
    from .registry import Registry

_log = logging.getLogger(__name__)

#: How long a change waits for the agent's answer. An agent answers once each
#: new instrument's port opened and was read, or 5 s passed (`SETTLE_S`).
RESULT_TIMEOUT_S = 30.0
#: Revisions held per agent; the oldest go first (the traffic log keeps every diff).
MAX_REVISIONS = 50
#: The log entry type of a configuration change (`kmz log --kind agent_config`).
AUDIT_TYPE = "agent_config"


class Revision(msgspec.Struct, frozen=True):
    """One configuration held for an agent."""

    revision: int
    config: str
    ts: float
    by: str
    source: str


class KnownAgent(msgspec.Struct):
    """What the hub keeps of one agent across its connections and the hub's restarts."""

    id: str
    software: str = ""
    host: str = ""
    protocol: int | None = None
    instruments: list[str] = []
    last_connected: float | None = None
    last_disconnected: float | None = None
    disconnect_reason: str = ""
    config_revision: int | None = None
    remote_config: Literal["accept", "refuse"] | None = None
    #: The configuration it runs, as it last said (TOML).
    config: str = ""
    revisions: list[Revision] = []
    #: Revisions in the order they were run; the last is the current one.
    applied: list[int] = []
    #: The number the next revision gets.
    next_revision: int = 1


class FleetStore(Protocol):
    """Where the fleet is kept between hub runs."""

    def load(self) -> list[KnownAgent]:
        """Every agent kept; [] the first time."""
        ...

    def save(self, agents: Sequence[KnownAgent]) -> None:
        """Replace what is kept (called in a worker thread)."""
        ...


class MemoryFleetStore:
    """Keeps nothing: for hubs built without a data directory (tests, embedding)."""

    def load(self) -> list[KnownAgent]:
        return []

    def save(self, agents: Sequence[KnownAgent]) -> None:
        pass


class JsonFleetStore:
    """A JSON file, replaced whole: written to a temporary file, synced, renamed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[KnownAgent]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            return msgspec.json.decode(data, type=list[KnownAgent])
        except msgspec.DecodeError as exc:
            # The log keeps every change; a fleet file lost is rebuilt as agents connect.
            _log.error(
                "fleet file unreadable; starting empty",
                extra={"path": str(self.path), "error": str(exc)},
            )
            return []

    def save(self, agents: Sequence[KnownAgent]) -> None:
        if not self.path.parent.is_dir():
            # A hub given its log from outside (tests, embedding) may have no
            # data directory, and must not make one: the fleet then lasts a run.
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as file:
            file.write(msgspec.json.encode(list(agents)))
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self.path)


class ChangeRefused(Exception):
    """A change the hub will not send: an HTTP status, a code, a message."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Fleet:
    """Known agents and their configurations; changed only through these methods."""

    def __init__(self, store: FleetStore | None = None) -> None:
        self.store: FleetStore = store or MemoryFleetStore()
        self._agents: dict[str, KnownAgent] = {}
        self._pending: dict[str, tuple[str, asyncio.Future[ConfigResult]]] = {}
        self._busy: set[str] = set()
        self._numbers = itertools.count(1)
        self._dirty: asyncio.Event | None = None

    # --- life cycle ------------------------------------------------------------------

    def load(self) -> None:
        """Take what the store kept (at the hub's start)."""
        self._agents = {a.id: a for a in self.store.load()}

    async def keep(self) -> None:
        """Save after each change until cancelled; at most one save in flight."""
        self._dirty = asyncio.Event()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._save()

    async def _save(self) -> None:
        snapshot = [msgspec.structs.replace(a) for a in self._agents.values()]
        try:
            await asyncio.to_thread(self.store.save, snapshot)
        except OSError as exc:
            _log.error("fleet not saved", extra={"error": str(exc)})

    def save_now(self) -> None:
        """Save in this thread (at shutdown)."""
        try:
            self.store.save(list(self._agents.values()))
        except OSError as exc:
            _log.error("fleet not saved", extra={"error": str(exc)})

    def _changed(self) -> None:
        if self._dirty is not None:
            self._dirty.set()

    # --- what membership and the handlers tell it ---------------------------------------

    def joined(self, hello: AgentHello, now: float) -> None:
        """An agent's hello was welcomed."""
        known = self._agents.setdefault(hello.agent_id, KnownAgent(id=hello.agent_id))
        known.software = hello.software
        known.protocol = hello.protocol
        known.instruments = sorted(i.id for i in hello.instruments)
        known.last_connected = now
        self._changed()

    def left(self, agent_id: str, now: float, reason: str) -> None:
        """An agent's (current) connection ended; its changes under way fail."""
        known = self._agents.get(agent_id)
        if known is not None:
            known.last_disconnected = now
            known.disconnect_reason = reason
            self._changed()
        for pending_id, (agent, future) in list(self._pending.items()):
            if agent == agent_id and not future.done():
                future.set_result(
                    ConfigResult(
                        id=pending_id,
                        revision=known.config_revision or 0 if known else 0,
                        ok=False,
                        error=ErrorInfo(
                            code=ErrorCode.OUTCOME_UNKNOWN,
                            message=f"agent {agent_id!r} disconnected before it answered "
                            f"({reason}); it says which revision it runs when it is back",
                        ),
                    )
                )

    def informed(self, agent_id: str, info: AgentInfo, now: float) -> None:
        """An agent said who it is and which configuration it runs (`agent_info`)."""
        known = self._agents.setdefault(agent_id, KnownAgent(id=agent_id))
        known.host = info.host
        known.remote_config = info.remote_config
        known.config_revision = info.config_revision
        known.config = info.config
        if info.instruments is not None:
            known.instruments = sorted(i.id for i in info.instruments)
        if agent_id not in self._busy:
            self._note_revision(known, info, now)
        self._changed()

    def _note_revision(self, known: KnownAgent, info: AgentInfo, now: float) -> None:
        """A revision an agent runs that no change of this hub sent just now."""
        held = {r.revision: r for r in known.revisions}
        revision = held.get(info.config_revision)
        if revision is None or (info.config_revision == 0 and revision.config != info.config):
            # Its own file (0), or a revision of a hub that lost its data.
            mine = Revision(info.config_revision, info.config, now, "agent", "the agent's file")
            known.revisions = [r for r in known.revisions if r.revision != mine.revision]
            known.revisions.append(mine)
            known.revisions.sort(key=lambda r: r.revision)
        if not known.applied or known.applied[-1] != info.config_revision:
            known.applied.append(info.config_revision)
            del known.applied[:-MAX_REVISIONS]
        known.next_revision = max(known.next_revision, info.config_revision + 1)

    def answered(self, agent_id: str, result: ConfigResult) -> bool:
        """An agent's `config_result`; False if nothing waits for it."""
        pending = self._pending.get(result.id)
        if pending is None or pending[0] != agent_id or pending[1].done():
            return False
        pending[1].set_result(result)
        return True

    # --- what the REST routes ask -------------------------------------------------------

    def records(self, registry: Registry, clock_bound_s: float) -> list[AgentRecord]:
        """Every agent seen, sorted by id: the connected ones with what the registry knows."""
        live = {r.id: r for r in registry.agent_records(clock_bound_s)}
        records = []
        for agent_id in sorted(live.keys() | self._agents.keys()):
            known = self._agents.get(agent_id) or KnownAgent(id=agent_id)
            facts = {
                "host": known.host,
                "protocol": known.protocol,
                "last_connected": known.last_connected,
                "last_disconnected": known.last_disconnected,
                "disconnect_reason": known.disconnect_reason,
                "config_revision": known.config_revision,
                "remote_config": known.remote_config,
            }
            record = live.get(agent_id)
            if record is not None:
                entry = registry.agents[agent_id]
                uptime = entry.state.uptime_s if entry.state is not None else None
                records.append(msgspec.structs.replace(record, uptime_s=uptime, **facts))
            else:
                records.append(
                    AgentRecord(
                        id=agent_id,
                        software=known.software,
                        run=None,
                        connected_since=None,
                        instruments=known.instruments,
                        online=False,
                        **facts,  # type: ignore[arg-type]
                    )
                )
        return records

    def view(self, agent_id: str, online: bool) -> AgentConfigView:
        """The configuration an agent runs and the revisions held; `ChangeRefused` if unknown."""
        known = self._known(agent_id)
        return AgentConfigView(
            agent=agent_id,
            revision=known.config_revision or 0,
            config=known.config,
            remote_config=known.remote_config,
            online=online,
            revisions=[RevisionInfo(r.revision, r.ts, r.by, r.source) for r in known.revisions],
            applied=list(known.applied),
        )

    def _known(self, agent_id: str) -> KnownAgent:
        known = self._agents.get(agent_id)
        if known is None:
            raise ChangeRefused(
                404, ErrorCode.UNKNOWN_AGENT, f"no agent {agent_id!r} has connected to this hub"
            )
        return known

    def prepare(
        self, agent_id: str, protocol: int | None, config: str, source: str, rollback: bool
    ) -> tuple[ConfigPush, str]:
        """The push for a change (or a rollback) and the config it replaces; `ChangeRefused`."""
        known = self._known(agent_id)
        if protocol is None:
            raise ChangeRefused(
                409,
                ErrorCode.AGENT_OFFLINE,
                f"agent {agent_id!r} is not connected; configuration goes to connected agents",
            )
        if protocol < 4:
            raise ChangeRefused(
                409,
                ErrorCode.UNSUPPORTED_PROTOCOL,
                f"agent {agent_id!r} speaks protocol {protocol}; configuration from the hub "
                "needs 4 (upgrade kleinmaelzung on it)",
            )
        if known.remote_config == "refuse":
            raise ChangeRefused(
                409,
                ErrorCode.REMOTE_CONFIG_REFUSED,
                f'agent {agent_id!r} runs its own file only (remote_config = "refuse" in it)',
            )
        if agent_id in self._busy:
            raise ChangeRefused(
                409, ErrorCode.CONFIG_BUSY, f"a change of agent {agent_id!r} is under way"
            )
        if rollback:
            if len(known.applied) < 2:
                raise ChangeRefused(
                    409,
                    ErrorCode.NO_PREVIOUS_REVISION,
                    f"agent {agent_id!r} has run no revision before {known.config_revision}",
                )
            target = known.applied[-2]
            held = {r.revision: r for r in known.revisions}
            if target not in held:
                raise ChangeRefused(
                    409, ErrorCode.NO_PREVIOUS_REVISION, f"revision {target} is no longer held"
                )
            revision, config, source = target, held[target].config, held[target].source
        else:
            try:
                tomllib.loads(config)
            except tomllib.TOMLDecodeError as exc:
                raise ChangeRefused(
                    422, ErrorCode.INVALID_CONFIG, f"{source}: not valid TOML: {exc}"
                ) from None
            revision = known.next_revision
            known.next_revision += 1
        push = ConfigPush(
            id=f"cfg-{next(self._numbers)}", revision=revision, config=config, source=source
        )
        return push, known.config

    async def wait_result(self, agent_id: str, push: ConfigPush) -> ConfigResult:
        """The agent's answer to a push sent just now (or a timeout's, as a result)."""
        future: asyncio.Future[ConfigResult] = asyncio.get_running_loop().create_future()
        self._pending[push.id] = (agent_id, future)
        self._busy.add(agent_id)
        try:
            return await asyncio.wait_for(future, RESULT_TIMEOUT_S)
        except TimeoutError:
            return ConfigResult(
                id=push.id,
                revision=self._agents[agent_id].config_revision or 0,
                ok=False,
                error=ErrorInfo(
                    code=ErrorCode.OUTCOME_UNKNOWN,
                    message=f"agent {agent_id!r} did not answer within {RESULT_TIMEOUT_S:g} s",
                ),
            )
        finally:
            del self._pending[push.id]
            self._busy.discard(agent_id)

    def settle(
        self,
        agent_id: str,
        push: ConfigPush,
        result: ConfigResult,
        by: str,
        now: float,
        rollback: bool,
    ) -> None:
        """Record what the agent did with a push."""
        known = self._known(agent_id)
        if result.ok:
            if not any(r.revision == push.revision for r in known.revisions):
                known.revisions.append(Revision(push.revision, push.config, now, by, push.source))
                del known.revisions[:-MAX_REVISIONS]
            if rollback and len(known.applied) >= 2:
                known.applied.pop()
            elif not known.applied or known.applied[-1] != push.revision:
                known.applied.append(push.revision)
            known.config_revision = push.revision
            known.config = push.config
        self._changed()


def config_diff(agent_id: str, before: str, before_revision: int | None, push: ConfigPush) -> str:
    """What a push changes, as a unified diff of the TOML."""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        push.config.splitlines(keepends=True),
        fromfile=f"{agent_id} revision {before_revision if before_revision is not None else '?'}",
        tofile=f"{push.source} (revision {push.revision})",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def audit_entry(*, agent_id: str, action: str, by: str, diff: str, outcome: ConfigOutcome) -> bytes:
    """The traffic-log entry of a change: who, which agent, the diff, the agent's outcome."""
    return json.dumps(
        {
            "type": AUDIT_TYPE,
            "agent": agent_id,
            "action": action,
            "by": by,
            "revision": outcome.revision,
            "running": outcome.running,
            "ok": outcome.ok,
            "error": msgspec.to_builtins(outcome.error) if outcome.error else None,
            "instruments": msgspec.to_builtins(outcome.instruments),
            "diff": diff,
        }
    ).encode()
