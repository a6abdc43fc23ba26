"""The wheel a user installs carries every module and every file the package reads at run time.

Built from this checkout by pip, as `pip install kleinmaelzung` would get it:
a dashboard asset, a driver profile or the certificate template missing from
`package-data` shows here, not on a user's Pi.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "src" / "kleinmaelzung"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_wheel_carries_every_module_asset_profile_and_template(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=170,
    )
    (wheel,) = tmp_path.glob("kleinmaelzung-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        "kleinmaelzung/" + path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert sorted(wanted - shipped) == []
    # The kinds of file the package reads at run time, each present at all.
    for needed in (
        "kleinmaelzung/hub/static/index.html",
        "kleinmaelzung/hub/static/vendor/uPlot.esm.js",
        "kleinmaelzung/hub/example-hub.toml",
        "kleinmaelzung/calibration/templates/certificate.typ",
        "kleinmaelzung/agent/drivers/profiles/kmz-kiln.toml",
        "kleinmaelzung/agent/drivers/modbus_maps/kmz-kiln-modbus.toml",
        "kleinmaelzung/agent/drivers/i2c_maps/sht3x.toml",
        "kleinmaelzung/sim/visa-instruments.yaml",
    ):
        assert needed in shipped
    entry_points = next(n for n in shipped if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "kmz = kleinmaelzung.cli:main" in text
    assert "[kleinmaelzung.drivers]" in text
