"""The README keeps working: its Python example and its CLI examples run against a real lab."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Lab
from .processes import get_json, wait_until

README = Path(__file__).resolve().parents[2] / "README.md"
DEMO_URL = "http://127.0.0.1:8765"
DEADLINE_S = 30.0


def fenced_blocks(language: str) -> list[str]:
    """The README's fenced code blocks in `language`, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), re.MULTILINE | re.DOTALL)


def python_example() -> str:
    """The quick start's example: the README's first Python block."""
    return fenced_blocks("python")[0]


def pandas_example() -> str:
    """The example of "Getting data out": the Python block after that heading."""
    text = README.read_text()
    section = text[text.index("## Getting data out") :]
    (example,) = re.findall(r"^```python\n(.*?)^```$", section.split("\n## ")[0], re.M | re.S)
    return example


def cli_examples() -> list[list[str]]:
    """The `kmz ...` lines a reader is told to type, as argument lists after `kmz`."""
    lines = [
        line.split("#")[0].strip() for block in fenced_blocks("sh") for line in block.split("\n")
    ]
    return [shlex.split(line)[1:] for line in lines if re.match(r"^(\.venv/bin/)?kmz ", line)]


def test_the_command_table_names_real_options() -> None:
    """`kmz hub [--host H] [--port P] [--data DIR]`: each option is one `kmz hub` has."""
    rows = re.findall(r"^\| `kmz (\w+)([^`]*)`", README.read_text(), re.MULTILINE)
    assert {command for command, _ in rows} >= {"hub", "agent", "sim", "demo", "instruments"}
    for command, rest in rows:
        options = re.findall(r"--[a-z-]+", rest)
        if not options:
            continue
        result = subprocess.run(
            [sys.executable, "-m", "kleinmaelzung.cli", command, "--help"],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        for option in options:
            assert option in result.stdout, f"kmz {command} has no {option}"


def test_the_python_example_is_a_whole_program_that_ends_by_itself(
    lab: Lab, tmp_path: Path
) -> None:
    example = python_example()
    compile(example, "README.md", "exec")  # a file, not a REPL session: no top-level await
    assert example.count(DEMO_URL) == 1, "the example talks to the demo hub"
    script = tmp_path / "example.py"
    script.write_text(example.replace(DEMO_URL, lab.url))
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    first, *samples = result.stdout.splitlines()
    assert "setpoint" in first and "80" in first
    assert len(samples) == 3
    assert all(line.startswith("kiln-air ") for line in samples), samples
    # The kiln reads its new setpoint back by the third sample at the latest.
    assert "'setpoint': 80.0" in samples[-1]


def test_the_pandas_example_prints_the_kiln_history(lab: Lab, tmp_path: Path) -> None:
    example = pandas_example()
    assert example.count(DEMO_URL) == 1, "the example talks to the demo hub"
    # Readings of the last hour: the lab's kiln has logged a few seconds of them.
    wait_for_history(lab.url)
    script = tmp_path / "history.py"
    script.write_text(example.replace(DEMO_URL, lab.url))
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Name: temperature" in result.stdout
    assert re.search(r"^count\s+[1-9]", result.stdout, re.M), result.stdout


def wait_for_history(url: str) -> None:
    """Wait until the hub's log holds a committed kiln-air sample."""
    wait_until(
        lambda: (get_json(f"{url}/api/history/kiln-air?since=-1h&points=1") or {}).get("t") or None,
        "a logged kiln-air sample",
        15.0,
    )


# About twenty kmz processes, one after another: more than the default 60 s
# on a loaded machine.
@pytest.mark.timeout(180)
def test_every_cli_example_runs_against_the_lab(lab: Lab, tmp_path: Path) -> None:
    examples = cli_examples()
    assert ["send", "kiln-air", "set_setpoint", "value=80"] in examples
    env = {**os.environ, "KMZ_HUB": lab.url}  # the examples omit --hub: the demo's default
    wait_for_history(lab.url)
    for args in examples:
        result = subprocess.run(
            [sys.executable, "-m", "kleinmaelzung.cli", *args],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            env=env,
            cwd=tmp_path,  # where `kmz export -o kiln.csv` writes
            check=False,
        )
        assert result.returncode == 0, f"kmz {shlex.join(args)}: {result.stderr}"
        assert result.stdout, f"kmz {shlex.join(args)} printed nothing"
        if args[:2] == ["log", "--raw"]:
            # The transcript asked for just before, with who asked.
            assert re.search(r"transcript for 30 s at \d+ B/s asked by ", result.stdout), (
                result.stdout
            )
