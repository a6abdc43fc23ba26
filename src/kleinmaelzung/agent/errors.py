"""The agent's exception tree; the runner maps each to an ErrorCode at its edge.

AgentError
├── ConfigError       a config or profile file is wrong (says file, key, expectation)
└── DriverError
    ├── PortError        the port cannot be opened, or vanished
    ├── NoAnswer         the instrument did not answer in time
    └── InstrumentError  the instrument answered with an error, or nonsense

Anything else a driver raises is a bug in the driver (or a library exception
it does not map): the runner faults that instrument with the exception as
the reason and answers commands with `internal_error`; it never ends the agent.
"""

from __future__ import annotations

from ..protocol import ErrorCode, KmzError


class AgentError(KmzError):
    """Base of the agent's exceptions."""


class ConfigError(AgentError):
    """A config or profile file is wrong; the message names file, key and expectation."""


class DriverError(AgentError):
    """An instrument could not be read or driven."""

    code = ErrorCode.INSTRUMENT_ERROR


class PortError(DriverError):
    """The port cannot be opened, or it went away."""

    code = ErrorCode.INSTRUMENT_UNREACHABLE


class NoAnswer(DriverError):
    """The instrument did not answer within its reply timeout."""

    code = ErrorCode.COMMAND_TIMEOUT


class InstrumentError(DriverError):
    """The instrument answered with an error or with something we cannot parse."""

    code = ErrorCode.INSTRUMENT_ERROR
