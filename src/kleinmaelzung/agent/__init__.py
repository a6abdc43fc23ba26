"""The agent: reads instruments on a Pi and keeps one WebSocket to the hub."""

from .agent import Agent, run_agent
from .config import AgentConfig, InstrumentConfig, load_config, parse_config
from .errors import AgentError, ConfigError, DriverError, InstrumentError, NoAnswer, PortError
from .outbox import Outbox

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentError",
    "ConfigError",
    "DriverError",
    "InstrumentConfig",
    "InstrumentError",
    "NoAnswer",
    "Outbox",
    "PortError",
    "load_config",
    "parse_config",
    "run_agent",
]
