"""The agent: reads instruments on a Pi and keeps one WebSocket to the hub."""

from .agent import Agent, run_agent
from .config import AgentConfig, InstrumentConfig, load_config, parse_config
from .drivers.discovery import MissingExtra, load_drivers
from .errors import AgentError, ConfigError, DriverError, InstrumentError, NoAnswer, PortError
from .link import AgentReplaced
from .spool import Spool, SpoolError, SpoolLimits

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentError",
    "AgentReplaced",
    "ConfigError",
    "DriverError",
    "InstrumentConfig",
    "InstrumentError",
    "MissingExtra",
    "NoAnswer",
    "PortError",
    "Spool",
    "SpoolError",
    "SpoolLimits",
    "load_config",
    "load_drivers",
    "parse_config",
    "run_agent",
]
