"""The Agent: instruments, spool and hub link wired together, run as one task group."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Mapping
from typing import Any

from ..protocol import (
    TRANSCRIPT,
    AgentInfo,
    Command,
    ConfigPush,
    ConfigResult,
    ErrorCode,
    ErrorInfo,
    InstrumentInfo,
    Limits,
    Reply,
    Status,
    Timeouts,
    Value,
    transcript_arguments,
)
from ..transport import Trust
from .buses import Buses
from .config import AgentConfig, InstrumentConfig, check_config
from .config_toml import dump_instruments
from .drivers.base import Driver, DriverClass
from .drivers.discovery import find_driver
from .ledger import CommandLedger
from .link import Link
from .permit import Permit
from .reconfigure import apply_push
from .remote_config import RevisionFile, effective_config, instruments_digest, revision_path
from .runner import InstrumentRunner
from .spool import Spool, SpoolLimits, default_spool_path
from .transcript import Transcript

_log = logging.getLogger(__name__)

#: On stop, how long the link may still deliver unacknowledged samples. The
#: hub acknowledges every 0.5 s once committed, so a healthy hub needs well
#: under a second; what is not acknowledged by then waits in the spool.
DRAIN_S = 2.0
#: How often the drain looks at the spool (it has no event for "empty").
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
        run = secrets.token_hex(8)
        spool = config.spool
        self.spool = Spool(
            spool.path if spool.path is not None else default_spool_path(config.agent_id),
            run=f"{run}.0",
            limits=SpoolLimits(
                max_samples=spool.max_samples,
                max_age_s=spool.max_age_s,
                commit_interval_s=spool.commit_interval_s,
            ),
        )
        # Keyed commands, in the spool's file: they must outlive restarts too.
        self.ledger = CommandLedger(self.spool.path)
        self.buses = Buses()
        self.runners: dict[str, InstrumentRunner] = {}
        #: Raw transcripts of the instruments asked for one so far.
        self.transcripts: dict[str, Transcript] = {}
        self.drivers = drivers
        #: The revision from the hub kept on disk, and what is run: the hub's
        #: revision (or the agent's own file, 0) and its instruments.
        self.revisions = RevisionFile(revision_path(config))
        self.local_digest = instruments_digest(config.instruments)
        self.config, self.config_revision = effective_config(config, self.revisions)
        #: Each instrument's next seq in this run, kept when its runner is
        #: replaced or removed: the hub drops samples at or below the newest.
        self._seqs: dict[str, int] = {}
        self._group: asyncio.TaskGroup | None = None
        self._runner_tasks: dict[str, asyncio.Task[None]] = {}
        self._configuring = asyncio.Lock()
        for instrument in self.config.instruments:
            self.runners[instrument.id] = self.build_runner(instrument)
        self.link = Link(
            hub=config.hub,
            agent_id=config.agent_id,
            token=config.token,
            run=run,
            instruments=[r.info for r in self.runners.values()],
            spool=self.spool,
            statuses=lambda: [r.status() for r in self.runners.values()],
            execute=self._execute,
            configure=self.configure,
            about=self.about,
            limits=limits,
            timeouts=timeouts,
            trust=Trust.of(config.ca_file, config.pin_sha256),
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
        await self.spool.open()
        await self.ledger.open()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for runner in self.runners.values():
                    self.start_runner(runner)
                link = group.create_task(self.link.run(), name="kmz-link")
                commits = group.create_task(self.spool.run_commits(), name="kmz-spool")
                await (stop or asyncio.Event()).wait()
                await self._stop(list(self._runner_tasks.values()), link)
                commits.cancel()
        except ExceptionGroup as failed:
            if len(failed.exceptions) == 1:
                raise failed.exceptions[0] from None
            raise
        finally:
            self._group = None
            self.buses.close()
            # Whatever happened above: every sample taken goes to the file.
            await asyncio.shield(self.spool.close())
            await asyncio.shield(self.ledger.close())
            self._report_unacknowledged()
            _log.info("agent stopped", extra={"agent": self.config.agent_id})

    async def _stop(self, runners: list[asyncio.Task[None]], link: asyncio.Task[None]) -> None:
        """Stop measuring (ports closed), let the link deliver what it can, then end it."""
        for runner in runners:
            runner.cancel()
        if runners:
            await asyncio.wait(runners)
        # What the hub has not acknowledged when the link ends waits in the
        # spool for the next start; a connected link may finish it first.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_S
        # Polled: the spool has no event for "empty".
        while self._delivering() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_DRAIN_CHECK_S)
        link.cancel()

    def _delivering(self) -> bool:
        return self.spool.depth > 0 and self.link.connected.is_set()

    def _report_unacknowledged(self) -> None:
        kept = self.spool.depth
        if kept:
            _log.info(
                "samples not yet acknowledged by the hub are kept in the spool for the next start",
                extra={"count": kept, "spool": str(self.spool.path or "in memory")},
            )

    def build_runner(self, instrument: InstrumentConfig) -> InstrumentRunner:
        """A runner for one instrument, its seq continuing where an earlier one of this run left."""
        driver_class = (self.drivers or {}).get(instrument.driver) or find_driver(instrument.driver)
        driver: Driver
        try:
            driver = driver_class(instrument)
            driver.info()
        except Exception as exc:
            # A driver that cannot even be built is that instrument's
            # fault, not the agent's: it is faulted, the others run.
            _log.exception("driver failed to start", extra={"instrument": instrument.id})
            driver = _Unusable(instrument, exc)
        return InstrumentRunner(
            instrument,
            driver,
            self.spool,
            self._on_status,
            bus=self.buses.get(instrument.bus_name),
            seq=self._seqs.get(instrument.id, 0),
        )

    def start_runner(self, runner: InstrumentRunner) -> None:
        """Run it in the agent's task group (while the agent runs)."""
        assert self._group is not None
        instrument_id = runner.config.id
        self._runner_tasks[instrument_id] = self._group.create_task(
            runner.run(), name=f"kmz-{instrument_id}"
        )

    async def stop_runner(self, instrument_id: str) -> None:
        """Stop one instrument's runner (its port closed); its next seq is kept."""
        runner = self.runners.pop(instrument_id)
        task = self._runner_tasks.pop(instrument_id, None)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        self._seqs[instrument_id] = runner.next_seq

    def next_seq(self, instrument_id: str) -> int:
        """The seq the instrument's next sample in this run gets."""
        runner = self.runners.get(instrument_id)
        return runner.next_seq if runner is not None else self._seqs.get(instrument_id, 0)

    def about(self) -> AgentInfo:
        """What the agent tells the hub about itself after each welcome."""
        return AgentInfo(
            host=socket.gethostname(),
            config_revision=self.config_revision,
            remote_config=self.config.remote_config,
            config=dump_instruments(self.config.instruments),
        )

    async def configure(self, push: ConfigPush) -> ConfigResult:
        """Run an instrument configuration from the hub, or refuse it and change nothing."""
        async with self._configuring:
            return await apply_push(self, push)

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
        if command.name == TRANSCRIPT:
            return self._transcript(command, runner)
        if command.key is not None:
            return await self.ledger.run_once(command, lambda c: runner.execute(c, permit))
        return await runner.execute(command, permit)

    def _transcript(self, command: Command, runner: InstrumentRunner) -> Reply:
        """Start (or stop) a raw transcript of the instrument's port: the hub's command."""

        def failed(code: ErrorCode, message: str) -> Reply:
            return Reply(id=command.id, ok=False, error=ErrorInfo(code=code, message=message))

        checked = transcript_arguments(command.args)
        if isinstance(checked, str):
            return failed(ErrorCode.INVALID_ARGUMENTS, checked)
        driver = runner.driver
        if not hasattr(driver, "transcript"):
            return failed(
                ErrorCode.UNKNOWN_COMMAND,
                f"the {runner.config.driver} driver of {command.instrument!r} cannot tap its "
                "port for a raw transcript (the serial line drivers can)",
            )
        transcript = self.transcripts.get(command.instrument)
        if transcript is None:
            transcript = Transcript(command.instrument, self.link.send_raw)
            self.transcripts[command.instrument] = transcript
        driver.transcript = transcript
        duration_s, rate = checked
        until = transcript.start(duration_s, rate)
        return Reply(id=command.id, ok=True, result={"until": until, "max_bytes_per_s": rate})


class _Unusable:
    """Stands in for a driver whose constructor or `info()` raised: every open fails with it."""

    def __init__(self, config: InstrumentConfig, error: Exception) -> None:
        self._config = config
        self._error = error

    @staticmethod
    def check_config(config: InstrumentConfig) -> None:
        """Checked already, by the real driver."""

    def info(self) -> InstrumentInfo:
        return InstrumentInfo(id=self._config.id, kind=self._config.driver)

    async def open(self) -> None:
        raise self._error

    async def read(self) -> dict[str, Value]:
        raise self._error

    async def execute(self, name: str, args: dict[str, Any]) -> Any:
        raise self._error

    async def close(self) -> None:
        pass


async def run_agent(config: AgentConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run an agent until `stop` is set or the task is cancelled."""
    await Agent(config).run(stop)
