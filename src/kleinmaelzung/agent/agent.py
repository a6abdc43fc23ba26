"""The Agent: instruments, outbox and hub link wired together, run as one task group."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping

from ..protocol import Command, ErrorCode, ErrorInfo, Limits, Reply, Status, Timeouts
from .buses import Buses
from .config import AgentConfig, check_config
from .drivers.base import DriverClass
from .drivers.discovery import find_driver
from .link import Link
from .outbox import Outbox
from .permit import Permit
from .runner import InstrumentRunner

_log = logging.getLogger(__name__)

#: On stop, how long the link may still deliver unacknowledged samples. The
#: hub acknowledges every 0.25 s once committed, so a healthy hub needs well
#: under a second; an unhealthy one costs this much of the stop.
DRAIN_S = 2.0
#: How often the drain looks at the outbox (it has no event for "empty").
_DRAIN_CHECK_S = 0.02


class Agent:
    """Serves the configured instruments to the hub."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        limits: Limits | None = None,
        timeouts: Timeouts | None = None,
        drivers: Mapping[str, DriverClass] | None = None,
    ) -> None:
        """`drivers` adds to (or replaces) the installed ones by name: for tests and embedding."""
        check_config(config, drivers=drivers)
        limits = limits or Limits()
        self.config = config
        self.outbox = Outbox(limits.outbox_samples)
        self.buses = Buses()
        self.runners: dict[str, InstrumentRunner] = {}
        for instrument in config.instruments:
            driver_class = (drivers or {}).get(instrument.driver) or find_driver(instrument.driver)
            self.runners[instrument.id] = InstrumentRunner(
                instrument,
                driver_class(instrument),
                self.outbox,
                self._on_status,
                bus=self.buses.get(instrument.bus_name),
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
        """Run until `stop` is set or the task is cancelled; ports are closed on the way out.

        The runners and the link run in one task group: a runner never
        raises (a driver's failure faults its instrument), so the one way to
        end early is the link giving up for good (the hub replaced this agent,
        say). Its exception ends `run`, unwrapped from the task group's
        ExceptionGroup, after every port is closed.
        """
        _log.info("agent starting", extra={"agent": self.config.agent_id, "hub": self.link.url})
        try:
            async with asyncio.TaskGroup() as group:
                runners = [
                    group.create_task(r.run(), name=f"kmz-{i}") for i, r in self.runners.items()
                ]
                link = group.create_task(self.link.run(), name="kmz-link")
                await (stop or asyncio.Event()).wait()
                await self._stop(runners, link)
        except ExceptionGroup as failed:
            if len(failed.exceptions) == 1:
                raise failed.exceptions[0] from None
            raise
        finally:
            self.buses.close()
            self._report_unacknowledged()
            _log.info("agent stopped", extra={"agent": self.config.agent_id})

    async def _stop(self, runners: list[asyncio.Task[None]], link: asyncio.Task[None]) -> None:
        """Stop measuring (ports closed), let the link deliver what it can, then end it."""
        for runner in runners:
            runner.cancel()
        if runners:
            await asyncio.wait(runners)
        # The outbox lives in memory: what the hub has not acknowledged when
        # the link ends is gone. Give a connected link a moment to finish.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_S
        # Polled: the outbox has no event for "empty".
        while self._delivering() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_DRAIN_CHECK_S)
        link.cancel()

    def _delivering(self) -> bool:
        return len(self.outbox) > 0 and self.link.connected.is_set()

    def _report_unacknowledged(self) -> None:
        unacknowledged = len(self.outbox)
        if unacknowledged:
            unsent = self.outbox.unsent
            _log.warning(
                "stopping with unacknowledged samples: discarded",
                extra={
                    "count": unacknowledged,
                    "sent": unacknowledged - unsent,
                    "unsent": unsent,
                    "why": "the outbox is in memory; the hub may have logged the sent ones",
                },
            )

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
