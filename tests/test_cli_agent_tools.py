"""Setting up a Pi with kmz as a user runs it: `agent --check`, `agent --example`, `ports`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kleinmaelzung.agent import load_config
from kleinmaelzung.agent.examples import INSTRUMENT_EXAMPLES
from kleinmaelzung.sim import Simulator

from .test_cli import kmz


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(["kiln-air"], seed=11) as simulator:
        yield simulator


def write_config(path: Path, instruments: list[tuple[str, str, str]]) -> Path:
    # No hub listens here: the check must never try to connect.
    lines = ['hub = "http://127.0.0.1:9"', 'agent_id = "pi"', ""]
    for instrument_id, profile, port in instruments:
        lines += ["[[instruments]]", f'id = "{instrument_id}"', f'profile = "{profile}"']
        lines += [f'port = "{port}"', ""]
    path.write_text("\n".join(lines))
    return path


def test_check_shows_the_reading_and_the_error_and_fails(sim: Simulator, tmp_path: Path) -> None:
    missing = str(tmp_path / "ttyUSB7")
    config = write_config(
        tmp_path / "agent.toml",
        [("kiln-air", "kmz-kiln", sim.paths["kiln-air"]), ("balance", "mt-sics-balance", missing)],
    )

    result = kmz("agent", "--check", str(config))

    assert result.returncode == 1, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line}
    assert rows["INSTRUMENT"].split()[:5] == [
        "INSTRUMENT",
        "DRIVER",
        "PORT/RESOURCE",
        "IDENTITY",
        "READING",
    ]
    kiln, balance = rows["kiln-air"], rows["balance"]
    assert "serial_line" in kiln and sim.paths["kiln-air"] in kiln
    assert "temperature=" in kiln and "°C" in kiln and "error" not in kiln
    assert missing in balance and "error: " in balance
    assert "1 of 2 instruments failed: balance" in result.stdout


def test_check_passes_when_every_instrument_answers(sim: Simulator, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "agent.toml", [("kiln-air", "kmz-kiln", sim.paths["kiln-air"])]
    )

    result = kmz("agent", str(config), "--check")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 1 instruments answered" in result.stdout


def test_check_with_a_config_error_names_it_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'hub = "http://127.0.0.1:9"\nagent_id = "pi"\n\n'
        '[[instruments]]\nid = "kiln-air"\nprofile = "kmz-kiln"\nport = "/dev/x"\n'
        'poll_interval_s = "often"\n'
    )

    result = kmz("agent", "--check", str(config))

    assert result.returncode == 2
    assert f"{config}: instruments[0].poll_interval_s: expected" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("driver", [None, *INSTRUMENT_EXAMPLES])
def test_every_example_loads_as_a_config(driver: str | None, tmp_path: Path) -> None:
    result = kmz("agent", "--example", *([driver] if driver else []))
    assert result.returncode == 0, result.stderr
    path = tmp_path / "agent.toml"
    path.write_text(result.stdout)

    config = load_config(path)

    drivers = [i.driver for i in config.instruments]
    assert drivers == ([driver] if driver else list(INSTRUMENT_EXAMPLES))
    assert result.stdout.lstrip().startswith("#")  # commented, for a person to edit


def test_an_example_for_an_unknown_driver_names_the_ones_there_are() -> None:
    result = kmz("agent", "--example", "telepathy")

    assert result.returncode == 2
    assert "telepathy" in result.stderr and "serial_line, visa, modbus" in result.stderr


def test_agent_without_a_config_says_how_to_get_one() -> None:
    result = kmz("agent")

    assert result.returncode == 2
    assert "--example" in result.stderr


def test_ports_json_is_a_list_of_ports() -> None:
    result = kmz("ports", "--json")

    assert result.returncode == 0, result.stderr
    ports = json.loads(result.stdout)
    assert isinstance(ports, list)
    for port in ports:
        assert set(port) == {"device", "by_id", "usb", "description"}


def test_ports_prints_a_table_or_says_there_are_none() -> None:
    result = kmz("ports")

    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first == "no serial ports found" or first.split()[:2] == ["DEVICE", "BY-ID"]
