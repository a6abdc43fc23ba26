"""`kmz hub` as a process: it stops promptly and cleanly on SIGTERM or Ctrl-C (defect 4)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from .conftest import start_hub
from .processes import free_port

# It took about 6 s, and its peers saw 1006.
PROMPT_EXIT_S = 1.5


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_idle_hub_exits_promptly(tmp_path: Path, signum: signal.Signals) -> None:
    hub = start_hub(tmp_path, free_port())
    try:
        started = time.monotonic()
        hub.popen.send_signal(signum)
        status = hub.popen.wait(timeout=10)
        took = time.monotonic() - started
        output = hub.output()
    finally:
        hub.stop()
    assert status == 0, output
    assert took < PROMPT_EXIT_S
    assert "Traceback" not in output
    assert "hub stopped" in output
