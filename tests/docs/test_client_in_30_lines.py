"""docs/client-in-30-lines.md: its plain-`websockets` client, run as the page says, on a demo.

The code block is taken from the page as it stands and run as a program of
its own (no kleinmaelzung import, our package is not even needed by it),
with the token the page tells the reader to make with `kmz token create`.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kleinmaelzung.protocol import PROTOCOL_VERSION

from ..e2e.processes import Process, free_port, get_json, wait_until

PAGE = Path(__file__).parents[2] / "docs" / "client-in-30-lines.md"
#: The modules the example may import: the standard library's and websockets.
ALLOWED_IMPORTS = {"asyncio", "json", "os", "sys", "websockets"}
KMZ = [sys.executable, "-m", "kleinmaelzung.cli"]


def example() -> str:
    """The page's one Python code block."""
    blocks = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "the page has exactly one Python block: the client"
    code: str = blocks[0]
    return code


def test_the_example_is_at_most_30_lines() -> None:
    lines = example().rstrip("\n").splitlines()
    assert len(lines) <= 30, f"the 30-line client has {len(lines)} lines"


def test_the_example_uses_only_websockets_and_speaks_the_current_protocol() -> None:
    tree = ast.parse(example())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS
    assert f'"protocol": {PROTOCOL_VERSION},' in example(), "the hello names another version"


@pytest.mark.slow
def test_the_example_watches_and_drives_the_demo_kiln(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "kmz-data"
    demo = Process("demo", ["demo", "--port", str(port), "--data", str(data)], tmp_path)
    try:
        wait_until(lambda: get_json(url + "/api/health"), "the demo hub", 30.0, demo)
        # As the page says: a token for the demo's admin, from the demo's data folder.
        made = subprocess.run(
            [*KMZ, "token", "create", "--user", "demo-admin", "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        program = tmp_path / "client.py"
        program.write_text(example())
        env = {**os.environ, "KMZ_HUB": url, "KMZ_TOKEN": made.stdout.strip()}
        try:
            run = subprocess.run(
                [sys.executable, str(program), "kiln-air"],
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"the client hung:\n{exc.stdout!r}\n{demo.output()}") from None
        assert run.returncode == 0, run.stderr + demo.output()
        lines = run.stdout.splitlines()
        assert [line.split(":")[0] for line in lines] == ["hello", *["sample"] * 3, "reply"]
        welcome = json.loads(lines[0].removeprefix("hello: "))
        assert welcome["type"] == "welcome"
        assert welcome["protocol"] == PROTOCOL_VERSION
        for line in lines[1:4]:
            ts, values = line.removeprefix("sample: ").split(" ", 1)
            assert float(ts) > 0
            values_read = ast.literal_eval(values)  # printed as a Python dict
            assert isinstance(values_read["temperature"], float)
        reply = ast.literal_eval(lines[4].removeprefix("reply: "))
        assert reply["id"] == "c1"
        assert reply["ok"] is True, reply
        assert reply["result"]["value"] == 80.0  # read back from the kiln's register
    finally:
        demo.stop()
