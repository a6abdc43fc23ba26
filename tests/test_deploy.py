"""The service units and udev rules in deploy/: valid for systemd, and they say what they should."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parents[1] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_both_roles_have_a_unit_that_restarts_runs_unprivileged_and_keeps_state() -> None:
    assert [u.name for u in UNITS] == ["kmz-agent.service", "kmz-hub.service"]
    for path in UNITS:
        service = unit(path)["Service"]
        assert service["Restart"] == "on-failure", path.name
        assert service["User"] == "kmz", path.name
        assert service["StateDirectory"] == "kleinmaelzung", path.name
        assert service["ConfigurationDirectory"] == "kleinmaelzung", path.name
        assert "/etc/kleinmaelzung/" in service["ExecStart"], path.name
    agent = unit(DEPLOY / "systemd" / "kmz-agent.service")["Service"]
    assert "dialout" in agent["SupplementaryGroups"].split()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_verifies_the_units(tmp_path: Path) -> None:
    # The units name /opt/kleinmaelzung/.venv/bin/kmz; verify checks that it
    # exists, so point them at this environment's kmz.
    kmz = str(Path(sys.executable).with_name("kmz"))
    copies = []
    for path in UNITS:
        copy = tmp_path / path.name
        copy.write_text(path.read_text().replace("/opt/kleinmaelzung/.venv/bin/kmz", kmz))
        copies.append(str(copy))
    result = subprocess.run(
        ["systemd-analyze", "verify", *copies],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "kmz-" in line and "Unit kmz" not in line
    ]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_the_udev_example_gives_instruments_names_under_dev_kmz() -> None:
    rules = [
        line
        for line in (DEPLOY / "udev" / "99-kleinmaelzung.rules").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules and all('SUBSYSTEM=="tty"' in r and 'SYMLINK+="kmz/' in r for r in rules)
