"""Commands in flight between clients and agents: hub-wide ids, deadlines and outcomes.

Only this module writes the pending-command table. A command is a physical
act: it runs once, on time, or not at all, and a client is never told that a
command failed while it may still run.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ..protocol import Command, ErrorCode, ErrorInfo, Reply
from .fanout import Fanout
from .peers import Peer

_log = logging.getLogger(__name__)

#: Seconds the hub waits past a command's deadline for the agent's reply: the
#: agent does not start a command after its deadline and bounds the run by it,
#: so a reply later than this means the agent went silent or away.
DEADLINE_GRACE_S = 1.0

#: Upper bounds (seconds) of the command round-trip histogram (`/metrics`):
#: a serial instrument answers in 10-100 ms, a Modbus write in a few ms.
#: Seconds a hub waits, beyond `DEADLINE_GRACE_S`, for the reply to a
#: command it sent through the bus to the hub holding the agent: that hub
#: answers `outcome_unknown` itself at the deadline and the grace, and its
#: answer must arrive first (a client waits 2 s past the deadline).
BUS_GRACE_S = 0.5

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Latencies:
    """Commands' round trips from the hub to the agent and back, by outcome (ok or a code)."""

    #: Per outcome: count per bucket of `LATENCY_BUCKETS_S` (not cumulative), then +Inf.
    buckets: dict[str, list[int]]
    #: Per outcome: the sum of the round trips, seconds.
    sums: dict[str, float]

    def observe(self, outcome: str, seconds: float) -> None:
        """Count one command's round trip."""
        counts = self.buckets.get(outcome)
        if counts is None:
            counts = self.buckets[outcome] = [0] * (len(LATENCY_BUCKETS_S) + 1)
            self.sums[outcome] = 0.0
        index = next((i for i, b in enumerate(LATENCY_BUCKETS_S) if seconds <= b), -1)
        counts[index] += 1
        self.sums[outcome] += seconds


class RemoteCommands(Protocol):
    """Runs a command on an agent of another hub (`federation`)."""

    def run(
        self, hub: str, command: Command, wait_s: float, client: Peer | None = None
    ) -> Awaitable[Reply | None]:
        """The agent's reply (or that hub's error) as a `Reply` with the command's
        id; None if nothing came within `wait_s`."""
        ...


@dataclass
class _Pending:
    #: Who asked: a client of this hub, or another hub through the bus.
    client: Peer | asyncio.Future[Reply]
    client_id: str
    agent: str
    instrument: str
    timer: asyncio.TimerHandle
    #: When it was forwarded (`Commands.monotonic`).
    sent: float = 0.0
    #: Why the agent went away with this command in flight, if it did.
    agent_left: str | None = None
    #: The bus id of the hub holding the agent, when it is not this one.
    hub: str | None = None


class Commands:
    """Forwards commands to agents and routes each outcome back to the asking client."""

    def __init__(self, fanout: Fanout, *, boot_id: str, monotonic: Callable[[], float]) -> None:
        self._fanout = fanout
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        # Command ids unique across hub restarts: a reply that an agent sends
        # late, to the next hub process, must not match a new command.
        self._id_prefix = boot_id
        #: The clock of command deadlines, sent to agents in welcome and ack.
        self.monotonic = monotonic
        #: Round trips of the commands answered (`/metrics`).
        self.latencies = Latencies({}, {})
        #: How commands reach agents of other hubs; None on a hub alone.
        self.remote: RemoteCommands | None = None
        self._remote_tasks: set[asyncio.Task[None]] = set()

    def forward(self, client: Peer, command: Command, agent: Peer) -> None:
        """Send a client's command to the owning agent under a hub-wide id, with its deadline."""
        self._forward(client, command, agent)

    def forward_for_bus(self, command: Command, agent: Peer) -> asyncio.Future[Reply]:
        """Send another hub's command to an agent of this hub; the future gets the reply
        (with the command's id), or `outcome_unknown` at the deadline."""
        answer: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._forward(answer, command, agent)
        return answer

    def forward_remote(self, client: Peer, command: Command, hub: str, agent: str) -> None:
        """Send a client's command through the bus to `hub`, whose agent `agent` serves
        the instrument; answered as on one hub, `outcome_unknown` if that hub is silent."""
        remote = self.remote
        if remote is None:
            raise RuntimeError("no bus: forward_remote needs Commands.remote")
        hub_id = f"{self._id_prefix}.{next(self._ids)}"
        wait_s = command.timeout_s + DEADLINE_GRACE_S + BUS_GRACE_S
        timer = asyncio.get_running_loop().call_later(wait_s, self._expire, hub_id)
        self._pending[hub_id] = _Pending(
            client=client,
            client_id=command.id,
            agent=agent,
            instrument=command.instrument,
            timer=timer,
            sent=self.monotonic(),
            hub=hub,
        )
        forwarded = Command(
            id=hub_id,
            instrument=command.instrument,
            name=command.name,
            args=command.args,
            timeout_s=command.timeout_s,
            key=command.key,
        )

        async def run() -> None:
            try:
                reply = await remote.run(hub, forwarded, wait_s, client)
            except Exception:  # the task's top: answered at the deadline
                _log.exception("command through the bus failed", extra={"id": hub_id})
                return
            if reply is not None:
                self._complete(hub_id, reply)

        task = asyncio.create_task(run(), name="kmz-remote-command")
        self._remote_tasks.add(task)
        task.add_done_callback(self._remote_tasks.discard)

    def _forward(self, client: Peer | asyncio.Future[Reply], command: Command, agent: Peer) -> None:
        hub_id = f"{self._id_prefix}.{next(self._ids)}"
        deadline = self.monotonic() + command.timeout_s
        # The agent starts the command only before its deadline and ends it
        # by then; the hub waits a little longer for the reply to travel.
        timer = asyncio.get_running_loop().call_later(
            command.timeout_s + DEADLINE_GRACE_S, self._expire, hub_id
        )
        self._pending[hub_id] = _Pending(
            client=client,
            client_id=command.id,
            agent=agent.name,
            instrument=command.instrument,
            timer=timer,
            sent=self.monotonic(),
        )
        forwarded = Command(
            id=hub_id,
            instrument=command.instrument,
            name=command.name,
            args=command.args,
            timeout_s=command.timeout_s,
            deadline=deadline,
            key=command.key,
        )
        self._fanout.send(agent, forwarded, instrument=command.instrument)

    def complete(self, agent: Peer, reply: Reply) -> bool:
        """Route an agent's reply back to the asking client; False if nobody waits for it."""
        pending = self._pending.get(reply.id)
        if pending is None or pending.agent != agent.name or pending.hub is not None:
            return False
        return self._complete(reply.id, reply)

    def _complete(self, hub_id: str, reply: Reply) -> bool:
        pending = self._pending.pop(hub_id, None)
        if pending is None:
            return False  # answered at its deadline, or its client left
        pending.timer.cancel()
        outcome = "ok" if reply.ok else (reply.error.code if reply.error else "error")
        self.latencies.observe(outcome, self.monotonic() - pending.sent)
        self._answer(
            pending,
            Reply(id=pending.client_id, ok=reply.ok, result=reply.result, error=reply.error),
        )
        return True

    def refuse(self, client: Peer, command: Command, code: ErrorCode, message: str) -> None:
        """Answer a command at once with an error: it was never forwarded."""
        client.connection.complete_command(command.id)
        self._fanout.send(client, _failed(command.id, code, message), instrument=command.instrument)

    def instrument_of(self, hub_id: str) -> str | None:
        """The instrument a command in flight was sent to."""
        pending = self._pending.get(hub_id)
        return pending.instrument if pending is not None else None

    def agent_left(self, agent_name: str, reason: str) -> None:
        """Note that an agent went away with commands in flight.

        They are not answered now: the agent may have run them, or may still
        read them from its socket buffer and run them before their deadline
        (it cannot know at once that its connection is gone). Each is answered
        at its deadline, `outcome_unknown`, unless the agent comes back and
        replies first.
        """
        for pending in self._pending.values():
            if pending.agent == agent_name and pending.agent_left is None and pending.hub is None:
                pending.agent_left = reason

    def hub_lost(self, hub: str, reason: str) -> None:
        """Answer at once the commands in flight through another hub that was lost (`hub_lost`).

        Not left to their deadline: the hub that would have answered is gone,
        so `outcome_unknown` at the deadline would tell the client no more,
        later. The command may still have run (the agent may have read it).
        """
        for hub_id, pending in list(self._pending.items()):
            if pending.hub != hub:
                continue
            del self._pending[hub_id]
            pending.timer.cancel()
            self.latencies.observe(ErrorCode.HUB_LOST, self.monotonic() - pending.sent)
            self._answer(
                pending,
                _failed(
                    pending.client_id,
                    ErrorCode.HUB_LOST,
                    f"{reason} with the command in flight to agent {pending.agent!r}: it may "
                    "have run; it will not start after its deadline",
                ),
            )

    def client_left(self, client: Peer) -> None:
        """Forget the commands of a client that went away; their replies have nowhere to go."""
        for hub_id, pending in list(self._pending.items()):
            if pending.client is client:
                pending.timer.cancel()
                del self._pending[hub_id]

    @property
    def in_flight(self) -> int:
        """Commands forwarded and not yet answered."""
        return len(self._pending)

    def _expire(self, hub_id: str) -> None:
        pending = self._pending.pop(hub_id, None)
        if pending is None:
            return
        if pending.agent_left is not None:
            what = f"agent {pending.agent!r} went away ({pending.agent_left}) after it was sent"
        else:
            what = f"no reply from agent {pending.agent!r} by the command's deadline"
        _log.warning(
            "command outcome unknown",
            extra={"agent": pending.agent, "instrument": pending.instrument, "id": hub_id},
        )
        self.latencies.observe(ErrorCode.OUTCOME_UNKNOWN, self.monotonic() - pending.sent)
        self._answer(
            pending,
            _failed(
                pending.client_id,
                ErrorCode.OUTCOME_UNKNOWN,
                f"{what}: the command may have run; it will not run any more",
            ),
        )

    def _answer(self, pending: _Pending, reply: Reply) -> None:
        client = pending.client
        if isinstance(client, asyncio.Future):
            if not client.done():
                client.set_result(reply)
            return
        client.connection.complete_command(pending.client_id)
        self._fanout.send(client, reply, instrument=pending.instrument)


def _failed(command_id: str, code: ErrorCode, message: str) -> Reply:
    return Reply(id=command_id, ok=False, error=ErrorInfo(code=code, message=message))
