"""Simulated laboratory instruments on pseudo-terminals (stdlib only)."""

from .instruments import (
    Balance,
    Hygrometer,
    Instrument,
    KilnController,
    SerialMultimeter,
    StreamingHygrometer,
    Thermometer,
)
from .simulator import DEMO_INSTRUMENTS, Simulator, run_simulator

__all__ = [
    "DEMO_INSTRUMENTS",
    "Balance",
    "Hygrometer",
    "Instrument",
    "KilnController",
    "SerialMultimeter",
    "Simulator",
    "StreamingHygrometer",
    "Thermometer",
    "run_simulator",
]
