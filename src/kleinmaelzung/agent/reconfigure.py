"""A configuration from the hub, run live: instruments added, removed or changed while
the others keep measuring, or refused with nothing changed.

The order matters, and each step says why: check everything first (a refusal
changes nothing); keep it on disk before running it (a power cut after
running but before keeping would bring the old one back); stop what goes;
tell the hub the new instrument list before the first sample of a new one
(the hub drops samples of instruments an agent did not announce); start
what comes; wait a little for each new port's first open and read, so the
admin learns at once which instrument cannot open and why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..protocol import ConfigPush, ConfigResult, ErrorCode, ErrorInfo, InstrumentOutcome
from .config import parse_remote_config
from .errors import ConfigError
from .remote_config import AppliedRevision, changes, only_poll_changed
from .runner import InstrumentRunner

if TYPE_CHECKING:
    from .agent import Agent

_log = logging.getLogger(__name__)

#: How long the result waits for each new instrument's first open and read. A
#: serial port opens and answers within 0.2 s in the tests; a Modbus TCP
#: server that is not there takes its connect timeout (3 s by default).
SETTLE_S = 5.0
#: How long removing an instrument waits for the hub to acknowledge its last
#: samples (it acknowledges every 0.5 s once committed); a sample it never
#: acknowledges would be refused on every later connection.
REMOVE_DRAIN_S = 2.0
_DRAIN_CHECK_S = 0.02


async def apply_push(agent: Agent, push: ConfigPush) -> ConfigResult:
    """Check, keep and run `push`; the result says what became of each instrument."""
    log = {"agent": agent.config.agent_id, "revision": push.revision}

    def refused(code: ErrorCode, message: str) -> ConfigResult:
        _log.warning("configuration refused", extra={**log, "reason": message})
        return ConfigResult(
            id=push.id,
            revision=agent.config_revision,
            ok=False,
            error=ErrorInfo(code=code, message=message),
        )

    if agent.config.remote_config == "refuse":
        return refused(
            ErrorCode.REMOTE_CONFIG_REFUSED,
            f"agent {agent.config.agent_id!r} runs its own file only "
            '(remote_config = "refuse" in it)',
        )
    try:
        new = parse_remote_config(
            push.config, agent.config, source=push.source, drivers=agent.drivers
        )
    except ConfigError as exc:
        return refused(ErrorCode.INVALID_CONFIG, str(exc))
    applied = AppliedRevision(
        revision=push.revision,
        config=push.config,
        local_digest=agent.local_digest,
        source=push.source,
    )
    try:
        await asyncio.to_thread(agent.revisions.save, applied)
    except OSError as exc:
        return refused(
            ErrorCode.INTERNAL_ERROR,
            f"cannot keep the configuration on disk ({agent.revisions.path}): {exc}; "
            "nothing changed",
        )
    what = changes(agent.config.instruments, new.instruments)
    before = {i.id: i for i in agent.config.instruments}
    rebuilt = [
        i.id
        for i in new.instruments
        if what[i.id] == "changed" and not only_poll_changed(before[i.id], i)
    ]
    removed = sorted(i for i, change in what.items() if change == "removed")
    # Stopped before the new ones start: a changed instrument may keep its port.
    for instrument_id in removed + rebuilt:
        await agent.stop_runner(instrument_id)
    await _drain(agent, removed)
    runners: dict[str, InstrumentRunner] = {}
    fresh: list[InstrumentRunner] = []
    for instrument in new.instruments:
        runner = agent.runners.get(instrument.id)
        if runner is None:
            runner = agent.build_runner(instrument)
            fresh.append(runner)
        elif what[instrument.id] == "changed":
            runner.set_poll(instrument)
        runners[instrument.id] = runner
    agent.runners = runners
    agent.config, agent.config_revision = new, push.revision
    await agent.link.announce(agent.about(), [r.info for r in runners.values()])
    for runner in fresh:
        agent.start_runner(runner)
    waits = [asyncio.ensure_future(r.settled.wait()) for r in fresh]
    if waits:
        _, pending = await asyncio.wait(waits, timeout=SETTLE_S)
        for wait in pending:
            wait.cancel()
    outcomes = []
    for instrument_id, change in sorted(what.items()):
        runner_ = runners.get(instrument_id)
        if runner_ is None:
            outcomes.append(InstrumentOutcome(id=instrument_id, change=change, state="offline"))
            continue
        reason = runner_.reason
        if runner_ in fresh and not runner_.settled.is_set():
            reason = f"not yet open and read after {SETTLE_S:g} s"
        outcomes.append(
            InstrumentOutcome(id=instrument_id, change=change, state=runner_.state, reason=reason)
        )
    _log.info(
        "configuration applied",
        extra={**log, "changes": ", ".join(f"{o.id} {o.change}" for o in outcomes)},
    )
    return ConfigResult(id=push.id, revision=push.revision, ok=True, instruments=outcomes)


async def _drain(agent: Agent, removed: list[str]) -> None:
    """Wait (bounded) until the hub acknowledged the removed instruments' samples of this run."""
    spool, link = agent.spool, agent.link
    last = {i: agent.next_seq(i) - 1 for i in removed}
    deadline = time.monotonic() + REMOVE_DRAIN_S
    # Polled: acknowledgements raise no event per instrument.
    while link.connected.is_set() and time.monotonic() < deadline:
        if all(spool.acknowledged_seq(spool.run, i) >= seq for i, seq in last.items()):
            return
        await asyncio.sleep(_DRAIN_CHECK_S)
