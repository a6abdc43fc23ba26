"""The docs' examples run: every block marked runnable, against a real `kmz demo`.

The convention, for any page under docs/ (the line right above the fence):

    <!-- runnable -->            the block below runs and must exit with status 0
    <!-- runnable: exit N -->    ... must exit with status N (each command of a console block)

- A ```python block is written to a file and run with this Python, with the
  demo's default hub URL (http://127.0.0.1:8765) replaced by the test demo's.
  A ```text block right after it is what it prints.
- A ```console block runs each `$ kmz ...` line, with `$KMZ_HUB` naming the
  test demo (the lines omit `--hub`, as a reader beside `kmz demo` does);
  the lines below a command, up to the next `$`, are what it prints. Only
  `kmz` commands run.

What a block prints is compared as a reader would: each line shown must be
printed, in that order (a line "..." stands for lines left out, and "..."
within a line for any text); any number may differ (times, readings,
sequence numbers), and a run of spaces matches any run of spaces.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..e2e.processes import Process, free_port, wait_until

DOCS = Path(__file__).resolve().parents[2] / "docs"
DEMO_URL = "http://127.0.0.1:8765"
DEMO_INSTRUMENTS = {"steep-water", "germ-chamber", "kiln-air", "balance", "bench-dmm"}
# One example: a Python start (about 1 s here) and a few round trips to the hub;
# generous for a machine shared by several test runs.
EXAMPLE_DEADLINE_S = 60.0

_BLOCK = re.compile(
    r"^<!-- runnable(?:: exit (?P<exit>\d+))? -->\n"
    r"```(?P<language>\w+)[^\n]*\n(?P<code>.*?)^```\n"
    r"(?:\n```text\n(?P<output>.*?)^```\n)?",
    re.MULTILINE | re.DOTALL,
)
_PIECE = re.compile(r"(\.\.\.|-?\d+(?:\.\d+)?|\s+)")


@dataclass(frozen=True)
class Example:
    """One runnable block of a page."""

    page: str
    line: int
    language: str
    code: str
    #: What it prints (python: the ```text block after it; console: inline).
    output: str
    exit_status: int

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def runnable_examples() -> list[Example]:
    """Every block marked runnable under docs/, in page order."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        for match in _BLOCK.finditer(text):
            found.append(
                Example(
                    page=page.relative_to(DOCS).as_posix(),
                    line=text.count("\n", 0, match.start()) + 2,
                    language=match["language"],
                    code=match["code"],
                    output=match["output"] or "",
                    exit_status=int(match["exit"] or 0),
                )
            )
    return found


def line_pattern(shown: str) -> re.Pattern[str]:
    """A shown output line as a pattern: numbers free, spaces loose, "..." any text."""
    parts = []
    for piece in _PIECE.split(shown.strip()):
        if piece == "...":
            parts.append(".*")
        elif re.fullmatch(r"-?\d+(?:\.\d+)?", piece):
            parts.append(r"-?\d+(?:\.\d+)?")
        elif piece.isspace():
            parts.append(r"\s+")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def unmatched(shown: str, printed: str) -> list[str]:
    """The shown lines not printed, in order; [] when every one is."""
    lines = [line.strip() for line in printed.splitlines()]
    position = 0
    missing = []
    for expected in shown.splitlines():
        if not expected.strip() or expected.strip() == "...":
            continue
        pattern = line_pattern(expected)
        for index in range(position, len(lines)):
            if pattern.fullmatch(lines[index]):
                position = index + 1
                break
        else:
            missing.append(expected)
    return missing


def console_commands(code: str) -> list[tuple[str, str]]:
    """A console block's `$ ...` lines, each with the output shown below it."""
    commands: list[tuple[str, list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
    return [(command, "\n".join(shown)) for command, shown in commands]


EXAMPLES = runnable_examples()


# --- the convention itself -------------------------------------------------------


def test_the_client_library_examples_are_marked_runnable() -> None:
    client = [e for e in EXAMPLES if e.page == "client.md" and e.language == "python"]
    assert len(client) >= 3, "client.md's examples must run"
    assert any("SyncClient(" in e.code for e in client)
    assert any("async with Client(" in e.code for e in client)
    assert all(e.output for e in client), "each shows what it prints"
    assert {e.language for e in EXAMPLES} <= {"python", "console"}


def test_shown_output_matches_as_a_reader_would() -> None:
    printed = "steep-water 22 {'temperature': 14.21}\nbalance   online   balance\n"
    assert unmatched("steep-water 21 {'temperature': 14.18}", printed) == []
    assert unmatched("balance online balance", printed) == []
    assert (
        unmatched("# A config ...\n...\nbalance online ...", "# A config x\nbalance online b") == []
    )
    # Words are words, and order counts.
    assert unmatched("steep-water 21 {'humidity': 14.18}", printed) != []
    assert unmatched("balance online balance\nsteep-water 1 {'temperature': 1}", printed) != []


# --- the examples, against a real demo -----------------------------------------------


@dataclass(frozen=True)
class Demo:
    url: str
    env: dict[str, str]
    folder: Path


def kmz_json(demo: Demo, *args: str) -> object:
    """A `kmz ... --json` answer, or None while it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "kleinmaelzung.cli", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=EXAMPLE_DEADLINE_S,
        env=demo.env,
        check=False,
    )
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`kmz demo` as a reader starts it, on a free port; every instrument online."""
    folder = tmp_path_factory.mktemp("docs-demo")
    env = {
        **os.environ,
        # The demo saves its admin token here, where kmz and the client find it.
        "XDG_CONFIG_HOME": str(folder / "config"),
        "XDG_STATE_HOME": str(folder / "state"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("KMZ_TOKEN", None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for key in ("XDG_CONFIG_HOME", "XDG_STATE_HOME"):
            patch.setenv(key, env[key])
        process = Process(
            "demo", ["demo", "--port", str(port), "--data", str(folder / "data")], folder
        )
    demo = Demo(url, {**env, "KMZ_HUB": url}, folder)
    try:

        def all_online() -> bool | None:
            listed = kmz_json(demo, "instruments")
            if not isinstance(listed, list):
                return None
            online = {record["id"] for record in listed if record["state"] == "online"}
            return True if online >= DEMO_INSTRUMENTS else None

        wait_until(all_online, "every demo instrument online", 30.0, process)

        def history() -> bool | None:
            # The SyncClient example reads the thermometer's last minutes from the log.
            answer = kmz_json(demo, "history", "steep-water", "--since", "-10m", "--points", "1")
            return True if isinstance(answer, dict) and answer.get("t") else None

        wait_until(history, "a logged steep-water sample", 30.0, process)
        yield demo
    finally:
        process.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_the_example_runs_and_prints_what_the_page_shows(
    example: Example, demo: Demo, tmp_path: Path
) -> None:
    if example.language == "python":
        run_python(example, demo, tmp_path)
    else:
        run_console(example, demo, tmp_path)


def run_python(example: Example, demo: Demo, folder: Path) -> None:
    script = folder / "example.py"
    script.write_text(example.code.replace(DEMO_URL, demo.url))
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=EXAMPLE_DEADLINE_S,
        env=demo.env,
        cwd=folder,
        check=False,
    )
    assert result.returncode == example.exit_status, f"{example}: {result.stderr}"
    missing = unmatched(example.output, result.stdout)
    assert not missing, f"{example} did not print {missing}; it printed:\n{result.stdout}"


def run_console(example: Example, demo: Demo, folder: Path) -> None:
    commands = console_commands(example.code)
    assert commands, f"{example}: a console block without `$ ` lines"
    for command, shown in commands:
        args = shlex.split(command)
        assert args[0] == "kmz", f"{example}: only kmz commands run, not {command!r}"
        result = subprocess.run(
            [sys.executable, "-m", "kleinmaelzung.cli", *args[1:]],
            capture_output=True,
            text=True,
            timeout=EXAMPLE_DEADLINE_S,
            env=demo.env,
            cwd=folder,
            check=False,
        )
        printed = result.stdout + result.stderr
        assert result.returncode == example.exit_status, f"{example}: $ {command}\n{printed}"
        missing = unmatched(shown, printed)
        assert not missing, (
            f"{example}: $ {command} did not print {missing}; it printed:\n{printed}"
        )
