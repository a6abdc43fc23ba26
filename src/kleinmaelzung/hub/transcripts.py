"""Raw serial transcripts at the hub: forwarding ``transcript`` commands, bounding `raw` input.

A client's ``transcript`` command (who may send it is `auth.guard`'s check:
the operator role with a grant that covers the instrument, or admin) goes to
the instrument's agent like any command, with its arguments checked and
filled in, and opens a window here: until its duration (and a little for
transit) ends, that agent's `raw` messages of that instrument are logged, up
to the rate times the duration. Anything else an agent sends as `raw` is
dropped, and the agent told once per window: a broken or hostile agent
cannot fill the log through this door. Only this module writes the windows.

`open_by_agent` is the door for a transcript an agent's own configuration
asks for when it starts (not wired yet: the agent's announcement of it is to
come with its `agent_info`): bounded as a client's, never extending or
replacing a window, and at most one per instrument per
`AGENT_WINDOW_EVERY_S`, so an agent that restarts in a loop cannot keep one
open.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from ..protocol import (
    TRANSCRIPT,
    TRANSCRIPT_PROTOCOL,
    Command,
    Error,
    ErrorCode,
    RawTraffic,
    transcript_arguments,
)
from ..protocol.transcript import (
    MAX_BYTES_PER_S,
    MAX_DURATION_S,
    MIN_BYTES_PER_S,
    MIN_CHARGE_BYTES,
)

if TYPE_CHECKING:
    from .handlers import Context
    from .registry import AgentEntry

_log = logging.getLogger(__name__)

#: Seconds a window stays open past its duration, for `raw` messages in transit.
TRANSIT_GRACE_S = 5.0
#: Escaping turns one byte into at most four characters (``\xNN``).
ESCAPED_PER_BYTE = 4
#: An agent's own configuration opens at most one window per instrument in
#: this time: at the largest duration and the default rate, at most ~5 MB of
#: escaped log an hour per instrument, whatever the agent does.
AGENT_WINDOW_EVERY_S = 3600.0


@dataclass
class _Window:
    agent: str
    #: Hub monotonic time after which the window is closed.
    until: float
    #: Characters of escaped data it may still log.
    budget: float
    told: bool = False


class Transcripts:
    """The transcripts running now, by instrument, and what each may still log."""

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        # Instruments whose agent was told it sent `raw` with no window open.
        self._told: set[str] = set()
        # Per instrument: when an agent's configuration last opened a window.
        self._agent_opened: dict[str, float] = {}

    def open(self, instrument: str, agent: str, duration_s: float, rate: int, now: float) -> None:
        """A transcript of `duration_s` at `rate` bytes/s starts (or replaces one; 0 s ends it)."""
        if duration_s <= 0:
            window = self._windows.get(instrument)
            if window is not None:
                window.until = min(window.until, now + TRANSIT_GRACE_S)
            return
        # One second of burst beyond the rate, as the agent's bucket allows.
        budget = ESCAPED_PER_BYTE * rate * (duration_s + 1.0)
        self._told.discard(instrument)
        self._windows[instrument] = _Window(agent, now + duration_s + TRANSIT_GRACE_S, budget)

    def open_by_agent(
        self, instrument: str, agent: str, duration_s: float, rate: int, now: float
    ) -> float | None:
        """A window an agent's own configuration asks for; its seconds, or None if refused.

        Bounded as a client's (`transcript_arguments`' limits, clamped here);
        refused while any window of the instrument is open (a reconnecting
        agent continues its window, never extends it) and within
        `AGENT_WINDOW_EVERY_S` of the last one an agent opened.
        """
        window = self._windows.get(instrument)
        if window is not None and now <= window.until:
            return None
        last = self._agent_opened.get(instrument)
        if last is not None and now - last < AGENT_WINDOW_EVERY_S:
            return None
        duration_s = min(max(duration_s, 0.0), MAX_DURATION_S)
        if duration_s <= 0:
            return None
        rate = min(max(rate, MIN_BYTES_PER_S), MAX_BYTES_PER_S)
        self._agent_opened[instrument] = now
        self.open(instrument, agent, duration_s, rate, now)
        return duration_s

    def admit(self, instrument: str, agent: str, data: str, now: float) -> str | None:
        """None if this `raw` may be logged (and counts it), else why not."""
        window = self._windows.get(instrument)
        if window is None or window.agent != agent or now > window.until:
            if window is not None and now > window.until:
                del self._windows[instrument]
            return f"no transcript of {instrument!r} runs (send the command transcript first)"
        window.budget -= max(len(data), MIN_CHARGE_BYTES)
        if window.budget < 0:
            return f"the transcript of {instrument!r} sent more than its rate allows"
        return None

    def tell_once(self, instrument: str) -> bool:
        """Whether the agent should be told about a dropped `raw` now (once per window)."""
        window = self._windows.get(instrument)
        if window is None:
            if instrument in self._told:
                return False
            self._told.add(instrument)
            return True
        if window.told:
            return False
        window.told = True
        return True


def forward_transcript(ctx: Context, command: Command, agent: AgentEntry) -> None:
    """Check a ``transcript`` command, open its window, and send it to the agent."""
    hub = ctx.hub
    refuse = hub.commands.refuse
    if agent.hello.protocol < TRANSCRIPT_PROTOCOL:
        refuse(
            ctx.peer,
            command,
            ErrorCode.UNSUPPORTED_PROTOCOL,
            f"agent {agent.hello.agent_id!r} speaks protocol {agent.hello.protocol}, which has "
            f"no transcripts ({TRANSCRIPT_PROTOCOL} has): upgrade it",
        )
        return
    checked = transcript_arguments(command.args)
    if isinstance(checked, str):
        refuse(ctx.peer, command, ErrorCode.INVALID_ARGUMENTS, checked)
        return
    duration_s, rate = checked
    hub.transcripts.open(
        command.instrument, agent.peer.name, duration_s, rate, hub.commands.monotonic()
    )
    principal = hub.auth.principal(ctx.peer)
    _log.info(
        "transcript asked",
        extra={
            "instrument": command.instrument,
            "peer": ctx.peer.name,
            "user": principal.name if principal is not None else "",
            "duration_s": duration_s,
            "max_bytes_per_s": rate,
        },
    )
    filled = {"duration_s": duration_s, "max_bytes_per_s": rate}
    # Who asked for it, beside the bytes (`kmz log --raw`): only transcripts
    # the hub sent on, with their arguments as the agent gets them.
    asked = {"instrument": command.instrument, **filled, "id": command.id}
    hub.traffic.event(ctx.peer.name, TRANSCRIPT, msgspec.json.encode(asked), command.instrument)
    hub.commands.forward(ctx.peer, msgspec.structs.replace(command, args=filled), agent.peer)


async def agent_raw(ctx: Context, message: RawTraffic) -> None:
    """Log an agent's `raw` bytes if a transcript of that instrument runs, within its budget."""
    hub = ctx.hub
    agent = hub.registry.agents.get(ctx.peer.name)
    if agent is None or agent.peer is not ctx.peer or message.instrument not in agent.instruments:
        ctx.send(
            Error(
                code=ErrorCode.UNKNOWN_INSTRUMENT,
                message=f"raw for instrument {message.instrument!r}, "
                "which this agent did not announce",
            )
        )
        return
    transcripts = hub.transcripts
    why = transcripts.admit(
        message.instrument, ctx.peer.name, message.data, hub.commands.monotonic()
    )
    if why is None:
        ctx.log_in(message, message.instrument)
        return
    if transcripts.tell_once(message.instrument):
        _log.warning(
            "raw dropped", extra={"agent": ctx.peer.name, "instrument": message.instrument}
        )
        hub.traffic.refused(
            ctx.peer.name, Error(code=ErrorCode.RATE_LIMITED, message=why), ctx.frame
        )
        ctx.send(Error(code=ErrorCode.RATE_LIMITED, message=why + "; dropped"))
