"""Simulated laboratory instruments on pseudo-terminals (stdlib only)."""

from .instruments import Balance, Hygrometer, Instrument, KilnController, Thermometer
from .simulator import DEMO_INSTRUMENTS, Simulator, run_simulator

__all__ = [
    "DEMO_INSTRUMENTS",
    "Balance",
    "Hygrometer",
    "Instrument",
    "KilnController",
    "Simulator",
    "Thermometer",
    "run_simulator",
]
