"""The README's promise: `kmz demo`, then watch and send from a second terminal."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from kleinmaelzung.client.credentials import token_for
from kleinmaelzung.demo import DemoPlan, demo_instruments, serial_ids

from .processes import Process, free_port, get_json, wait_until

#: The demo lab with every extra installed: every driver kind, and two serial instruments more.
FULL_LAB = {
    "steep-water": "serial_line",
    "germ-chamber": "i2c",
    "kiln-air": "modbus",
    "balance": "serial_line",
    "bench-dmm": "visa",
}


def kmz(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kleinmaelzung.cli", *args, "--hub", url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def last_reading(url: str, instrument: str) -> dict[str, object]:
    """One reading of `instrument`, through `kmz watch` as a user would take it."""
    watched = kmz(url, "watch", instrument, "--count", "1", "--json")
    assert watched.returncode == 0, watched.stderr
    reading = json.loads(watched.stdout)
    assert reading["instrument"] == instrument
    values: dict[str, object] = reading["values"]
    return values


def online(url: str) -> set[str]:
    """The ids of the instruments the hub has online now (with the token the demo saved)."""
    token = token_for(url)  # the demo requires one; none is saved until its banner
    if token is None:
        return set()
    request = urllib.request.Request(
        url + "/api/instruments", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            records = json.loads(response.read())
    except OSError:
        return set()
    return {r["id"] for r in records if r["state"] == "online"}


def banner_rows(output: str) -> dict[str, list[str]]:
    """The banner's instrument lines: id -> [driver, where ...]."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        words = line.split()
        if line.startswith("    ") and len(words) >= 3 and words[1] in set(FULL_LAB.values()):
            rows[words[0]] = words[1:]
    return rows


def test_demo_runs_the_lab_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    demo = Process("demo", ["demo", "--port", str(port), "--data", str(tmp_path / "d")], tmp_path)
    try:
        wait_until(
            lambda: True if online(url) == set(FULL_LAB) else None,
            f"all of {sorted(FULL_LAB)} online",
            30.0,
            demo,
        )
        banner = demo.output()
        assert url in banner
        assert "watch kiln-air --count 5 --json" in banner
        assert "running without" not in banner  # every extra is installed here
        rows = banner_rows(banner)
        assert {i: row[0] for i, row in rows.items()} == FULL_LAB
        assert rows["kiln-air"][1].startswith("127.0.0.1:")
        assert rows["bench-dmm"][1] == "TCPIP::bench-dmm.demo::INSTR"
        assert rows["balance"][1].startswith("/dev/")
        assert rows["germ-chamber"][1:] == ["/dev/i2c-1@0x44", "(simulated", "SHT3x)"]

        # Every driver kind delivers readings to a client, each with its own channels.
        latest = {instrument: last_reading(url, instrument) for instrument in FULL_LAB}
        assert set(FULL_LAB.values()) == {"serial_line", "modbus", "visa", "i2c"}
        assert 11.9 < latest["bench-dmm"]["voltage_dc"] < 12.1  # VISA
        assert isinstance(latest["kiln-air"]["setpoint"], float)  # Modbus
        assert 15.0 < latest["germ-chamber"]["temperature"] < 17.0  # I2C, the chamber's air
        assert 90.0 < latest["germ-chamber"]["humidity"] <= 100.0
        assert isinstance(latest["balance"]["mass"], float)  # serial
        assert isinstance(latest["steep-water"]["temperature"], float)

        # The README's kiln command, through the Modbus driver to the simulated controller.
        setpoint = kmz(url, "send", "kiln-air", "set_setpoint", "value=80")
        assert setpoint.returncode == 0, setpoint.stderr + demo.output()
        assert setpoint.stdout.startswith("ok")
        assert "value=80" in setpoint.stdout  # read back from the holding register
        after = kmz(url, "watch", "kiln-air", "--count", "3", "--json")
        assert after.returncode == 0, after.stderr
        last = json.loads(after.stdout.splitlines()[-1])["values"]
        assert last["setpoint"] == 80.0
        # The serial kiln's channel name holds on the Modbus path too.
        assert isinstance(last["temperature"], float)

        # The banner's one-time dashboard link signs a browser in (tests/browser use it).
        assert f"{url}/login?code=kmzl_" in banner

        watched = kmz(url, "watch", "kiln-air", "--count", "5", "--json")
        assert watched.returncode == 0, watched.stderr
        readings = [json.loads(line) for line in watched.stdout.splitlines()]
        assert [r["instrument"] for r in readings] == ["kiln-air"] * 5

        tared = kmz(url, "send", "balance", "tare")
        assert tared.returncode == 0, tared.stderr + demo.output()
        assert tared.stdout.startswith("ok")

        assert demo.interrupt() == 0, demo.output()
        assert (tmp_path / "d" / "traffic.sqlite3").exists()
    finally:
        demo.stop()


# The fault: the agent's task fails a moment after the demo started, as a bug or
# a lost resource would make it. Everything else (hub, simulator, CLI) is real.
_AGENT_DIES = """
import asyncio, sys
from kleinmaelzung.agent import Agent

async def run_then_fail(self, stop=None):
    await asyncio.sleep(1.0)
    raise RuntimeError("injected: the agent broke")

Agent.run = run_then_fail
from kleinmaelzung.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_demo_stops_at_once_with_the_reason_when_its_agent_dies(tmp_path: Path) -> None:
    port = free_port()
    args = ["demo", "--port", str(port), "--data", str(tmp_path / "d")]
    try:
        result = subprocess.run(
            [sys.executable, "-c", _AGENT_DIES, *args],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the demo ran on without its agent:\n{exc.stderr!r}") from None
    assert result.returncode == 1, result.stderr
    assert "the agent stopped" in result.stderr
    assert "RuntimeError: injected: the agent broke" in result.stderr
    assert "Traceback" not in result.stderr
    assert get_json(f"http://127.0.0.1:{port}/api/health") is None


# sitecustomize runs at interpreter start-up, before any of our code: from then
# on, the modbus, visa and i2c extras' modules cannot be imported, as if never installed.
_REFUSE_EXTRAS = textwrap.dedent(
    """
    import sys

    class _NotInstalled:
        refused = ("pymodbus", "pyvisa", "pyvisa_py", "pyvisa_sim", "smbus2")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.refused:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
    """
)


def test_demo_without_the_extras_runs_the_serial_lab_and_the_simulated_i2c_sensor_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_REFUSE_EXTRAS)
    monkeypatch.setenv("PYTHONPATH", str(site))  # Process passes our environment on
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    demo = Process("demo", ["demo", "--port", str(port), "--data", str(tmp_path / "d")], tmp_path)
    try:
        serial_lab = {"steep-water", "kiln-air", "balance"}
        lab = {*serial_lab, "germ-chamber"}
        wait_until(
            lambda: True if online(url) == lab else None,
            f"all of {sorted(lab)} online",
            30.0,
            demo,
        )
        output = demo.output()
        assert output.count("running without") == 1, output
        assert "pip install 'kleinmaelzung[modbus]'" in output
        assert "pip install 'kleinmaelzung[visa]'" in output
        assert "kleinmaelzung[i2c]" not in output  # a simulated sensor needs no smbus2
        assert "Traceback" not in output
        rows = banner_rows(output)
        assert {i: row[0] for i, row in rows.items()} == {
            **dict.fromkeys(serial_lab, "serial_line"),
            "germ-chamber": "i2c",
        }

        # kiln-air falls back to its serial twin: the README's command still works.
        setpoint = kmz(url, "send", "kiln-air", "set_setpoint", "value=80")
        assert setpoint.returncode == 0, setpoint.stderr + demo.output()
        assert setpoint.stdout.startswith("ok")
        assert demo.interrupt() == 0, demo.output()
    finally:
        demo.stop()


def test_without_the_i2c_driver_the_germination_chamber_is_its_serial_twin() -> None:
    plan = DemoPlan(i2c=False)
    assert "germ-chamber" in serial_ids(plan)
    lab = demo_instruments(plan, {"germ-chamber": "/dev/pts/9"}, modbus_port=None)
    (chamber,) = [i for i in lab if i.config.id == "germ-chamber"]
    assert (chamber.config.driver, chamber.config.profile) == ("serial_line", "kmz-hygrometer")
    assert "germ-chamber" not in serial_ids(DemoPlan())
