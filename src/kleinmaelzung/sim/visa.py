"""The demo lab's VISA instruments: pyvisa-sim definitions shipped with the package.

An agent reaches them with `backend = visa.backend()` (pyvisa-sim must be
installed); nothing here imports pyvisa, so `kmz sim` loads without it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: The bench multimeter, for the `scpi-dmm` profile.
MULTIMETER = "TCPIP::bench-dmm.demo::INSTR"


def definitions() -> Path:
    """The pyvisa-sim definitions file."""
    return Path(str(resources.files(__package__).joinpath("visa-instruments.yaml")))


def backend() -> str:
    """The PyVISA backend string that serves these definitions."""
    return f"{definitions()}@sim"
