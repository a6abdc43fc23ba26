"""Polls each instrument, stamps its samples, runs commands one at a time per port.

Whatever a driver raises stays with its instrument: the instrument turns
`faulted` with the reason, and the runner keeps polling (or reopening).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from ..protocol import (
    Command,
    CommandSpec,
    ErrorCode,
    ErrorInfo,
    InstrumentState,
    Reply,
    Sample,
    Status,
    Value,
    check_arguments,
)
from ..transport import backoff_delays
from .buses import Bus
from .config import InstrumentConfig
from .drivers.base import Driver
from .drivers.blocking import BlockingDriver
from .errors import DriverError, InstrumentError, NoAnswer, PortError
from .permit import ALWAYS, Permit

_log = logging.getLogger(__name__)

#: How often an instrument that stays faulted is summarised at WARNING; each
#: failed poll's detail is logged at DEBUG only.
FAULT_SUMMARY_S = 60.0

#: Quoted text and numbers in a failure's message: the offending reading, an
#: attempt number. They change from poll to poll while the fault does not.
_VARIABLE_DETAIL = re.compile(
    r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"""
)

#: Kinds of failure whose traceback a runner has logged; past this many it
#: stops remembering new ones (and logs no more tracebacks).
_MAX_TRACEBACK_KINDS = 32


def fault_kind(exc: BaseException) -> str:
    """What makes two failures the same fault: the exception's class and its message
    with quoted text and numbers blanked out.

    A status goes to the hub when the state or this kind changes, not when
    only the reading inside the message does (issue 7, defect 13).
    """
    return f"{type(exc).__name__}: {_VARIABLE_DETAIL.sub('…', str(exc))}"


class SampleSink(Protocol):
    """Where readings go: the agent's spool."""

    def put(self, sample: Sample) -> None:
        """Take one sample; never blocks."""


class InstrumentRunner:
    """One instrument: keeps its port open, polls it, and serialises access to it."""

    def __init__(
        self,
        config: InstrumentConfig,
        driver: Driver,
        outbox: SampleSink,
        on_status: Callable[[Status], None],
        *,
        reopen_max_s: float = 10.0,
        fault_summary_s: float = FAULT_SUMMARY_S,
        bus: Bus | None = None,
        seq: int = 0,
    ) -> None:
        """`seq`: the first sample's; a runner that replaces another of the same
        instrument in the same run continues its count (the hub drops repeats)."""
        self.config = config
        self.driver = driver
        self.info = driver.info()
        # Optimistic until the first exchange says otherwise: the hub shows an
        # instrument online while its agent is connected, and a failure to
        # open or read turns it faulted, with the reason, within one poll.
        self.state: InstrumentState = "online"
        #: Why it is faulted, with the latest detail (the last bad reading):
        #: refreshed on every failed poll, sent with every status.
        self.reason = ""
        #: `fault_kind` of the current fault; "" while online.
        self.fault_kind = ""
        #: Failed polls or opens since the current fault began.
        self.fault_count = 0
        self._fault_summary_s = fault_summary_s
        self._next_fault_summary = 0.0
        self._tracebacks_logged: set[str] = set()
        self._outbox = outbox
        self._on_status = on_status
        self._seq = seq
        self._open = False
        #: Set once the port failed to open, or opened and was read once
        #: (`state` and `reason` say how it went): what a configuration change reports.
        self.settled = asyncio.Event()
        self._rescheduled = asyncio.Event()
        # One exchange at a time on a bus (a port, an RS-485 line, an I2C
        # bus): a command waits for the current poll to finish, never longer.
        self.bus = bus or Bus(config.bus_name)
        self._lock = self.bus.lock
        if isinstance(driver, BlockingDriver):
            driver.attach_bus(self.bus)
        self._reopen_max_s = reopen_max_s
        self._commands: dict[str, CommandSpec] = {c.name: c for c in self.info.commands}

    @property
    def next_seq(self) -> int:
        """The seq the next sample gets."""
        return self._seq

    def set_poll(self, config: InstrumentConfig) -> None:
        """Take a configuration that differs only in poll interval or description, port open."""
        self.config = config
        self.info = msgspec.structs.replace(
            self.info, poll_interval_s=config.poll_interval_s, description=config.description
        )
        self._rescheduled.set()  # a shorter interval takes effect now, not after the old one

    def status(self) -> Status:
        """The instrument's current state as a message."""
        return Status(
            instrument=self.config.id, state=self.state, ts=time.time(), reason=self.reason
        )

    async def run(self) -> None:
        """Open, poll forever, reopen when the port goes away."""
        log = {"instrument": self.config.id}
        try:
            while True:
                await self._open_port()
                next_poll = time.monotonic()
                while self._open:
                    await self._poll_once()
                    self.settled.set()
                    # Fixed-rate schedule on the monotonic clock; a late poll
                    # does not make every later one late too. Read each time:
                    # the hub may change it (`set_poll`).
                    next_poll += self.config.poll_interval_s
                    delay = next_poll - time.monotonic()
                    if delay < 0:
                        next_poll = time.monotonic()
                        delay = 0
                    if await self._rescheduled_within(delay):
                        next_poll = time.monotonic()
                _log.info("port lost, reopening", extra=log)
        finally:
            self._open = False
            await self._close_driver()

    async def _rescheduled_within(self, delay: float) -> bool:
        """Wait `delay` seconds, or less if `set_poll` changed the interval (then True)."""
        try:
            async with asyncio.timeout(delay):
                await self._rescheduled.wait()
        except TimeoutError:
            return False
        self._rescheduled.clear()
        return True

    async def _open_port(self) -> None:
        delays = backoff_delays(initial_s=0.5, maximum_s=self._reopen_max_s)
        while True:
            async with self._lock:
                try:
                    await self.driver.open()
                except Exception as exc:
                    # A library's own exception is retried like a PortError:
                    # a port that is not there yet may well be there later.
                    await self._close_driver()
                    self._fault(exc)
                    self.settled.set()
                else:
                    self._open = True
                    return
            await asyncio.sleep(next(delays))

    async def _poll_once(self) -> None:
        async with self._lock:
            try:
                values = check_values(await self.driver.read())
            except PortError as exc:
                self._open = False
                await self._close_driver()
                self._fault(exc)
                return
            except Exception as exc:
                # Anything else, a driver's bug included, faults this
                # instrument only. The port stays open: reopening a serial
                # port can reset the device (DTR), and a driver whose port
                # is gone says so with PortError.
                self._fault(exc)
                return
        sample = Sample(instrument=self.config.id, seq=self._seq, ts=time.time(), values=values)
        self._seq += 1
        self._outbox.put(sample)
        self._set_online()

    async def _close_driver(self) -> None:
        try:
            await self.driver.close()
        except Exception as exc:
            # Once per kind: a driver whose close fails fails at every reopen.
            self._log_unexpected(exc, "closing the driver failed")

    async def execute(self, command: Command, permit: Permit = ALWAYS) -> Reply:
        """Run a command from the hub and answer it; never raises.

        The command starts only if `permit` allows it once the port is free,
        and the whole exchange ends by its deadline.
        """
        spec = self._commands.get(command.name)
        if spec is None:
            return _error(
                command,
                ErrorCode.UNKNOWN_COMMAND,
                f"{self.config.id} has no command {command.name!r}; "
                f"it accepts: {', '.join(sorted(self._commands)) or 'none'}",
            )
        problem = check_arguments(spec, command.args)
        if problem is not None:
            return _error(command, ErrorCode.INVALID_ARGUMENTS, problem)
        refusal = await permit.refusal()
        if refusal is not None:
            return self._not_run(command, *refusal)
        started = False
        limit_s = min(command.timeout_s, permit.remaining_s())
        try:
            async with asyncio.timeout(limit_s), self._lock:
                # Checked again once the port is ours: the wait may have been long.
                refusal = await permit.refusal()
                if refusal is not None:
                    return self._not_run(command, *refusal)
                if not self._open:
                    raise PortError(
                        f"{self.config.port or self.config.id} is not open ({self.reason})"
                    )
                started = True
                result = await self.driver.execute(command.name, dict(command.args))
        except TimeoutError:
            if not started:
                return self._not_run(
                    command,
                    ErrorCode.DEADLINE_EXCEEDED,
                    "not run: its deadline passed while the port was busy",
                )
            return _error(command, ErrorCode.COMMAND_TIMEOUT, f"no answer within {limit_s:.3g} s")
        except NoAnswer as exc:
            return _error(command, ErrorCode.COMMAND_TIMEOUT, str(exc))
        except DriverError as exc:
            return _error(command, exc.code, str(exc))
        except Exception as exc:
            # internal_error, not instrument_error: the instrument reported
            # nothing; our driver failed (a bug, or a library's exception it
            # does not map), perhaps after the command went out.
            self._log_unexpected(exc, "command failed in the driver", id=command.id)
            return _error(
                command,
                ErrorCode.INTERNAL_ERROR,
                f"driver error: {_describe(exc)}; the command may have reached the instrument",
            )
        return Reply(id=command.id, ok=True, result=result)

    def _not_run(self, command: Command, code: ErrorCode, why: str) -> Reply:
        log = {"instrument": self.config.id, "id": command.id, "command": command.name}
        _log.warning("command not run", extra={**log, "why": why})
        return _error(command, code, why)

    def _set_online(self) -> None:
        if self.state == "online":
            return
        _log.info(
            "instrument online",
            extra={"instrument": self.config.id, "after_failures": self.fault_count},
        )
        self.state, self.reason, self.fault_kind, self.fault_count = "online", "", "", 0
        self._on_status(self.status())

    def _fault(self, exc: Exception) -> None:
        """Fault the instrument; a status goes out only if the kind of fault is new."""
        expected = isinstance(exc, DriverError)
        reason = str(exc) if expected else f"driver error: {_describe(exc)}"
        kind = fault_kind(exc)
        now = time.monotonic()
        log = {"instrument": self.config.id, "reason": reason}
        if self.state == "faulted" and kind == self.fault_kind:
            # The same fault again, perhaps with another bad reading: the
            # hub learns the latest detail with the next status it gets.
            self.reason = reason
            self.fault_count += 1
            _log.debug("still faulted", extra=log)
            if now >= self._next_fault_summary:
                self._next_fault_summary = now + self._fault_summary_s
                _log.warning("still faulted", extra={**log, "failures": self.fault_count})
            return
        if expected:
            _log.warning("instrument faulted", extra=log)
        else:
            self._log_unexpected(exc, "instrument faulted by a driver error")
        self.state, self.reason, self.fault_kind, self.fault_count = "faulted", reason, kind, 1
        self._next_fault_summary = now + self._fault_summary_s
        self._on_status(self.status())

    def _log_unexpected(self, exc: Exception, event: str, **extra: str) -> None:
        """Log a driver's unexpected exception; its traceback only the first time."""
        kind = fault_kind(exc)
        first = kind not in self._tracebacks_logged
        if first and len(self._tracebacks_logged) < _MAX_TRACEBACK_KINDS:
            self._tracebacks_logged.add(kind)
        _log.error(
            event,
            exc_info=exc if first else None,
            extra={"instrument": self.config.id, "error": _describe(exc), **extra},
        )


def check_values(values: object) -> dict[str, Value]:
    """A driver's reading if the wire can carry it; InstrumentError otherwise.

    Checked here so that one driver's bad value (None, NaN, an object) faults
    its instrument instead of making the hub refuse a batch of everyone's
    samples.
    """
    if not isinstance(values, dict):
        raise InstrumentError(f"the driver returned {type(values).__name__}, not a reading")
    for name, value in values.items():
        ok = isinstance(value, bool | str) or (
            isinstance(value, int | float) and math.isfinite(value)
        )
        if not isinstance(name, str) or not ok:
            raise InstrumentError(f"channel {name!r}: cannot send {value!r}")
    return values


def _describe(exc: BaseException) -> str:
    """`struct.error: unpack requires ...`: a library's exception says whose it is."""
    kind = type(exc)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__.split('.')[0]}.{name}"
    return f"{name}: {exc}" if str(exc) else name


def _error(command: Command, code: ErrorCode, message: str) -> Reply:
    return Reply(id=command.id, ok=False, error=ErrorInfo(code=code, message=message))
