"""The example driver of docs/drivers.md, installed as a package of its own, read through a hub.

The package is a real distribution on the agent's path (a module and its
.dist-info with an entry point), found by `kmz agent` the way a third-party
driver is: by entry point, with no change to this project.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kleinmaelzung.client import Client, Sample
from kleinmaelzung.hub import RunningHub

ROOT = Path(__file__).parents[2]
DEADLINE_S = 20.0


def install_example(into: Path) -> Path:
    """The docs' example driver as package `random-walk-driver` in `into`; returns `into`."""
    docs = (ROOT / "docs" / "drivers.md").read_text()
    code = re.search(r"```python\n(.*?)```", docs, re.S)
    assert code is not None, "docs/drivers.md has no Python example"
    into.mkdir(parents=True)
    (into / "random_walk_driver.py").write_text(code.group(1))
    info = into / "random_walk_driver-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: random-walk-driver\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[kleinmaelzung.drivers]\nrandom_walk = random_walk_driver:RandomWalk\n"
    )
    return into


def write_config(path: Path, hub_url: str, settings: str) -> Path:
    path.write_text(
        f'hub = "{hub_url}"\nagent_id = "walker-pi"\n\n'
        '[[instruments]]\nid = "walker"\ndriver = "random_walk"\npoll_interval_s = 0.1\n\n'
        f"[instruments.settings]\n{settings}\n"
    )
    return path


async def start_agent(config: Path, package: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "kleinmaelzung.cli", "agent", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={
            "PYTHONPATH": str(package),
            "PATH": "/usr/bin:/bin",
            "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"],
        },
    )


async def test_the_example_driver_package_reads_and_obeys_through_the_hub(
    hub: RunningHub, tmp_path: Path
) -> None:
    package = install_example(tmp_path / "site")
    config = write_config(tmp_path / "agent.toml", hub.url, "start = 18.0\nstep = 0.0")
    agent = await start_agent(config, package)
    try:
        async with Client(hub.url) as client:
            samples = client.subscribe("walker")
            sample = await asyncio.wait_for(anext(samples), DEADLINE_S)
            assert isinstance(sample, Sample)
            assert sample.values == {"value": 18.0}
            assert await client.command("walker", "reset", to=5.0) == {"value": 5.0}
            listed = {r.id: r for r in await client.instruments()}
            assert listed["walker"].kind == "random-walk"
            assert listed["walker"].channels[0].unit == "°C"
    finally:
        agent.terminate()
        await asyncio.wait_for(agent.wait(), DEADLINE_S)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("stepp = 1.0", "instruments[0].settings.stepp: unknown key (a typo?)"),
        ('start = "warm"', "instruments[0].settings.start: expected `float`, got `str`"),
    ],
)
async def test_a_wrong_driver_setting_names_file_instrument_and_key(
    tmp_path: Path, settings: str, message: str
) -> None:
    package = install_example(tmp_path / "site")
    config = write_config(tmp_path / "agent.toml", "http://127.0.0.1:9", settings)
    agent = await start_agent(config, package)
    output, _ = await asyncio.wait_for(agent.communicate(), DEADLINE_S)
    assert agent.returncode == 2  # a config error, as for every config error
    assert f"{config}: {message}" in output.decode()
    assert "Traceback" not in output.decode()
