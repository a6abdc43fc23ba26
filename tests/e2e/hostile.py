"""Tools for attacking a real hub process: a hub with auth on, its memory, hostile frames.

`hostile_frames` is a seeded generator of malformed, truncated and hostile
frames for either endpoint; `AuthedHub` starts `kmz hub` with a credentials
store, an admin token and an agent token, and reads the process's memory.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kleinmaelzung.protocol import PROTOCOL_VERSION

from .processes import Process, free_port, get_json, wait_until

AGENT_ID = "fuzz-pi"
#: Instruments the fuzzing agent may announce; `fz-marker` carries its markers only.
INSTRUMENTS = ("fz-1", "fz-2", "fz-marker")


def kmz_output(*args: str) -> str:
    """Run `kmz` to completion; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "kleinmaelzung.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its children (the log's writer process), in bytes."""
    total = 0
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


@dataclass
class AuthedHub:
    """A `kmz hub` process with authentication on, and tokens for a client and an agent."""

    process: Process
    url: str
    client_token: str
    agent_token: str

    @property
    def pid(self) -> int:
        return self.process.popen.pid

    def rss(self) -> int:
        """The hub's resident memory now, in bytes (its writer process included)."""
        return rss_bytes(self.pid)

    def cpu_s(self) -> float:
        """CPU seconds the hub's own process has used so far (user and system)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.stop()

    @classmethod
    def start(cls, tmp: Path, config: str = "", *, asyncio_debug: bool = True) -> AuthedHub:
        """Create the credentials, then start the hub with `config` (TOML) on a free port."""
        data = tmp / "hub-data"
        kmz_output("user", "add", "fuzzer", "--role", "admin", "--data", str(data))
        client_token = kmz_output("token", "create", "--user", "fuzzer", "--data", str(data))
        agent_token = kmz_output(
            "token", "create", "--agent", AGENT_ID, "--instruments", "fz-*", "--data", str(data)
        )
        port = free_port()
        path = tmp / "hub.toml"
        path.write_text(config)
        process = Process(
            "hub",
            ["hub", "--port", str(port), "--data", str(data), "--config", str(path)],
            tmp,
            asyncio_debug=asyncio_debug,
        )
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: get_json(url + "/api/health"), "hub health", 20.0, process)
        return cls(process, url, client_token.splitlines()[-1], agent_token.splitlines()[-1])


def client_hello(token: str | None) -> dict[str, Any]:
    return {"type": "client_hello", "protocol": PROTOCOL_VERSION, "token": token, "name": "fz"}


def agent_hello(token: str | None) -> dict[str, Any]:
    return {
        "type": "agent_hello",
        "protocol": PROTOCOL_VERSION,
        "agent_id": AGENT_ID,
        "run": "fuzzrun",
        "token": token,
        "instruments": [
            {"id": i, "kind": "fuzz", "channels": [{"name": "v", "unit": "V"}], "commands": []}
            for i in INSTRUMENTS
        ],
    }


def _client_templates(rng: random.Random) -> list[dict[str, Any]]:
    n = rng.randrange(10**6)
    return [
        {"type": "subscribe", "id": f"s{n}", "patterns": ["fz-*"]},
        {"type": "unsubscribe", "id": f"u{n}", "patterns": ["fz-1"]},
        {"type": "list_instruments", "id": f"l{n}"},
        {"type": "command", "id": f"c{n}", "instrument": "fz-1", "name": "tare", "args": {}},
        {"type": "command", "id": f"k{n}", "instrument": "fz-2", "name": "set", "args": {"v": 1}},
        client_hello(None),
        # The hub's own messages, sent the wrong way.
        {"type": "welcome", "protocol": 1, "hub": "x", "session": "s", "server_time": 1.0},
        {"type": "ack", "seqs": {"fz-1": 1}},
        {"type": "error", "code": "internal_error", "message": "x"},
    ]


def _agent_templates(rng: random.Random) -> list[dict[str, Any]]:
    seq = rng.randrange(1, 1000)
    sample = {"instrument": "fz-1", "seq": seq, "ts": 1.7e9, "values": {"v": 1.5}}
    return [
        {"type": "data", "samples": [sample], "run": "fuzzrun"},
        {
            "type": "gap",
            "instrument": "fz-2",
            "run": "fuzzrun",
            "first_seq": 1,
            "last_seq": 2,
            "count": 2,
            "reason": "x",
        },
        {"type": "status", "instrument": "fz-1", "state": "online", "ts": 1.7e9},
        {"type": "reply", "id": f"r{seq}", "ok": True, "result": {"a": [1, 2]}},
        {"type": "agent_state", "spool_depth": 0, "spool_oldest": None, "dropped": 0},
        agent_hello(None),
        {"type": "subscribe", "id": "s", "patterns": ["fz-*"]},
        {"type": "ack", "seqs": {"fz-1": 1}},
    ]


_HOSTILE_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63,
    -(2**63) - 1,
    10**30,
    1e308,
    -0.0,
    "",
    "\x00",
    "a\nforged log line",
    "\x1b[31mred\x1b[0m\x1b]0;title\x07",
    "\u202etxet desrever\u202c",
    "\ud7ff\ue000\uffff",
    "x" * 5000,
    "fz-*",
    "../../etc/passwd",
    [],
    {},
    [[[[[]]]]],
    {"a": {"b": {"c": {}}}},
    {"$ref": "#"},
]


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 4 or roll < 0.4:
        return rng.choice(_HOSTILE_VALUES) if rng.random() < 0.5 else rng.random() * 10**6
    if roll < 0.7:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        rng.choice(["type", "id", "samples", "x", "", "\x00", "seq"]): _random_json(rng, depth + 1)
        for _ in range(rng.randrange(4))
    }


def _mutate(rng: random.Random, message: dict[str, Any]) -> str | bytes:
    """One hostile variant of a valid message, as the text of a frame (bytes: not UTF-8 text)."""
    message = json.loads(json.dumps(message))
    keys = list(message)
    how = rng.randrange(14)
    if how == 0 and keys:  # a required field missing
        del message[rng.choice(keys)]
    elif how == 1 and keys:  # a field of the wrong type or value
        message[rng.choice(keys)] = _random_json(rng)
    elif how == 2:  # an unknown field
        message["unexpected_" + str(rng.randrange(100))] = _random_json(rng)
    elif how == 3:  # an unknown or hostile tag
        message["type"] = rng.choice(["", "DATA", "data ", "hello", None, 1, "x" * 300])
    elif how == 4:  # nested far deeper than allowed
        depth = rng.choice([33, 100, 1000, 5000])
        return json.dumps(message)[:-1] + ', "args": ' + "[" * depth + "]" * depth + "}"
    elif how == 5:  # numbers JSON cannot hold, or that break a naive parser
        return (
            json.dumps(message)[:-1]
            + ', "seq": '
            + rng.choice(
                ["NaN", "Infinity", "-Infinity", "1e99999", "9" * 500, "0x10", "01", "1.", "-"]
            )
            + "}"
        )
    elif how == 6:  # duplicate keys
        text = json.dumps(message)
        return text[:-1] + ', "type": "subscribe", "type": "data"}'
    elif how == 7:  # truncated anywhere
        text = json.dumps(message)
        return text[: rng.randrange(max(1, len(text)))]
    elif how == 8:  # not UTF-8
        return json.dumps(message).encode()[:-2] + b"\xff\xfe\xc3\x28}"
    elif how == 9:  # a long string in every string field
        for key in keys:
            if isinstance(message[key], str) and key != "type":
                message[key] = "\u0000\u001b[2J" + "Z" * rng.choice([300, 70_000])
    elif how == 10:  # a JSON value that is not an object
        return json.dumps(_random_json(rng))
    elif how == 11:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    elif how == 12:  # whitespace, BOM, comments, trailing garbage
        return (
            rng.choice(["\ufeff", " \t\r\n", "/* */"])
            + json.dumps(message)
            + rng.choice(["", "}", "]]]", "\x00", " // x", ",{}"])
        )
    else:  # many elements where a few are expected
        for key in keys:
            if isinstance(message[key], list):
                message[key] = message[key] * rng.choice([1001, 5000])
    return json.dumps(message, allow_nan=True)


def hostile_frames(rng: random.Random, endpoint: str) -> Iterator[str | bytes]:
    """An endless stream of hostile frames for `endpoint` ("agent" or "client")."""
    templates = _agent_templates if endpoint == "agent" else _client_templates
    while True:
        roll = rng.random()
        if roll < 0.001:  # over the hub's frame limit (1 MiB): message_too_large or a close
            yield '{"type": "subscribe", "id": "big", "patterns": ["' + "a" * (1 << 20) + '"]}'
        elif roll < 0.05:
            yield json.dumps(_random_json(rng))
        else:
            yield _mutate(rng, rng.choice(templates(rng)))
