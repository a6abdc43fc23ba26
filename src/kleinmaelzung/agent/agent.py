"""The Agent: instruments, outbox and hub link wired together, run as one task group."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from ..protocol import Command, ErrorCode, ErrorInfo, Limits, Reply, Status, Timeouts
from .config import AgentConfig, check_config
from .drivers.discovery import find_driver
from .link import Link
from .outbox import Outbox
from .permit import Permit
from .runner import InstrumentRunner

_log = logging.getLogger(__name__)


class Agent:
    """Serves the configured instruments to the hub."""

    def __init__(
        self, config: AgentConfig, *, limits: Limits | None = None, timeouts: Timeouts | None = None
    ) -> None:
        check_config(config)
        limits = limits or Limits()
        self.config = config
        self.outbox = Outbox(limits.outbox_samples)
        self.runners: dict[str, InstrumentRunner] = {}
        for instrument in config.instruments:
            driver = find_driver(instrument.driver)(instrument)
            self.runners[instrument.id] = InstrumentRunner(
                instrument, driver, self.outbox, self._on_status
            )
        self.link = Link(
            hub=config.hub,
            agent_id=config.agent_id,
            token=config.token,
            run=secrets.token_hex(8),
            instruments=[r.info for r in self.runners.values()],
            outbox=self.outbox,
            statuses=lambda: [r.status() for r in self.runners.values()],
            execute=self._execute,
            limits=limits,
            timeouts=timeouts,
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set or the task is cancelled; ports are closed on the way out."""
        _log.info("agent starting", extra={"agent": self.config.agent_id, "hub": self.link.url})
        tasks = [asyncio.create_task(r.run(), name=f"kmz-{i}") for i, r in self.runners.items()]
        tasks.append(asyncio.create_task(self.link.run(), name="kmz-link"))
        waiter = asyncio.create_task((stop or asyncio.Event()).wait())
        try:
            done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not waiter and not task.cancelled() and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in [waiter, *tasks]:
                task.cancel()
            for task in [waiter, *tasks]:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if len(self.outbox):
                _log.warning(
                    "stopping with unacknowledged samples", extra={"count": len(self.outbox)}
                )
            _log.info("agent stopped", extra={"agent": self.config.agent_id})

    def _on_status(self, status: Status) -> None:
        self.link.send_status(status)

    async def _execute(self, command: Command, permit: Permit) -> Reply:
        runner = self.runners.get(command.instrument)
        if runner is None:
            return Reply(
                id=command.id,
                ok=False,
                error=ErrorInfo(
                    code=ErrorCode.UNKNOWN_INSTRUMENT,
                    message=f"this agent has no instrument {command.instrument!r}",
                ),
            )
        return await runner.execute(command, permit)


async def run_agent(config: AgentConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run an agent until `stop` is set or the task is cancelled."""
    await Agent(config).run(stop)
