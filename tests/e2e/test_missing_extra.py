"""`pip install kleinmaelzung` without `[agent]`: the agent's commands say so at once, by name.

Each test runs a real `kmz` in a subprocess whose import system cannot find the
agent extra's modules (pyserial and pyserial-asyncio-fast), as on a machine where
they were never installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .processes import free_port, get_json

INSTALL_LINE = "pip install 'kleinmaelzung[agent]'"
#: Generous for a loaded 2-core machine; without the check the demo runs until killed.
QUICK_S = 20.0

# sitecustomize runs at interpreter start-up, before any of our code: from then
# on, importing the agent extra's modules fails as if they were not installed.
_REFUSE_EXTRA = textwrap.dedent(
    """
    import sys

    class _NotInstalled:
        refused = ("serial", "serial_asyncio_fast")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.refused:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
    """
)


@pytest.fixture
def without_agent_extra(tmp_path: Path) -> dict[str, str]:
    """An environment in which `serial` and `serial_asyncio_fast` cannot be imported."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_REFUSE_EXTRA)
    python_path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1"}
    probe = subprocess.run(
        [sys.executable, "-c", "import serial_asyncio_fast"],
        env=env,
        capture_output=True,
        text=True,
        timeout=QUICK_S,
        check=False,
    )
    assert probe.returncode != 0, "the extra is still importable: the test would prove nothing"
    return env


def run_kmz(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run kmz to its end within QUICK_S; return its result and how long it took."""
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "kleinmaelzung.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=QUICK_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"kmz {' '.join(args)} still ran after {QUICK_S} s without the agent extra:\n"
            f"{exc.stdout!r}\n{exc.stderr!r}"
        ) from None
    return result, time.monotonic() - started


def test_demo_refuses_to_start_and_names_the_extra(
    without_agent_extra: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    result, _ = run_kmz(
        without_agent_extra, "demo", "--port", str(port), "--data", str(tmp_path / "d")
    )
    assert result.returncode != 0
    assert "kmz demo needs the agent extra" in result.stderr
    assert INSTALL_LINE in result.stderr
    assert "missing module serial" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing that looks healthy: no banner, no hub left answering.
    assert "Try, in another terminal" not in result.stdout
    assert "Kleinmaelzung demo" not in result.stdout
    assert get_json(f"http://127.0.0.1:{port}/api/health") is None


def test_agent_names_the_extra_instead_of_a_traceback(
    without_agent_extra: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'hub = "http://127.0.0.1:8765"\nagent_id = "no-extra-pi"\n\n'
        '[[instruments]]\nid = "kiln-air"\nprofile = "kmz-kiln"\nport = "/dev/ttyUSB0"\n'
    )
    result, _ = run_kmz(without_agent_extra, "agent", str(config))
    assert result.returncode != 0
    assert "kmz agent needs the agent extra" in result.stderr
    assert INSTALL_LINE in result.stderr
    assert "missing module serial" in result.stderr
    assert "Traceback" not in result.stderr
