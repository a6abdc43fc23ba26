"""`kmz user`, `kmz token`, the tokens file, and `kmz watch` right after `kmz demo`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kleinmaelzung.cli import main
from kleinmaelzung.client.credentials import save_token, token_for, tokens_path
from kleinmaelzung.hub.auth import SqliteCredentials

from .e2e.processes import Process, free_port, wait_until


def kmz(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_users_and_tokens_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "hub-data")
    assert kmz(capsys, "user", "add", "ada", "--role", "admin", "--data", data)[0] == 0
    status, _, err = kmz(capsys, "user", "add", "ada", "--role", "viewer", "--data", data)
    assert status == 1 and "exists already" in err
    kmz(
        capsys,
        "user",
        "add",
        "olga",
        "--role",
        "operator",
        "--instruments",
        "kiln-*",
        "--commands",
        "tare",
        "--data",
        data,
    )
    status, out, _ = kmz(
        capsys,
        "token",
        "create",
        "--user",
        "olga",
        "--expires",
        "90d",
        "--label",
        "laptop",
        "--data",
        data,
    )
    assert status == 0
    token = out.strip()
    assert token.startswith("kmz_")
    store = SqliteCredentials(Path(data))
    assert store.load().authenticate(token, 0.0).name == "olga"  # type: ignore[union-attr]
    status, out, _ = kmz(capsys, "token", "list", "--data", data)
    assert token.split("_")[1] in out and "laptop" in out and "valid" in out
    assert token.split("_", 2)[2] not in out  # the secret is shown once, never again
    status, out, _ = kmz(capsys, "user", "list", "--data", data)
    assert "olga" in out and "kiln-*" in out and "active" in out
    kmz(capsys, "user", "disable", "olga", "--data", data)
    assert "disabled" in kmz(capsys, "user", "list", "--data", data)[1]
    assert kmz(capsys, "token", "revoke", token.split("_")[1], "--data", data)[0] == 0
    assert "revoked" in kmz(capsys, "token", "list", "--data", data)[1]
    status, _, err = kmz(capsys, "token", "create", "--agent", "pi-1", "--data", data)
    assert status == 1 and "instruments" in err
    status, out, _ = kmz(
        capsys,
        "token",
        "create",
        "--agent",
        "pi-1",
        "--instruments",
        "kiln-air",
        "--save",
        "http://127.0.0.1:9999",
        "--data",
        data,
    )
    assert token_for("http://127.0.0.1:9999") == out.strip()
    for secret_file in (tmp_path / "hub-data").iterdir():
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600, secret_file


def test_the_tokens_file_is_private_and_per_hub(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_token("ws://127.0.0.1:8765/ws/client", "kmz_a")
    save_token("https://hub.lab.example", "kmz_b")
    assert path == tokens_path() and path.is_relative_to(config_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token_for("http://127.0.0.1:8765") == "kmz_a"
    assert token_for("https://hub.lab.example/") == "kmz_b"
    assert token_for("http://127.0.0.1:1") is None
    monkeypatch.setenv("KMZ_TOKEN", "kmz_env")
    assert token_for("http://127.0.0.1:8765") == "kmz_env"
    monkeypatch.delenv("KMZ_TOKEN")
    os.chmod(path, 0o644)  # others could read it: ignored, as ssh does
    assert token_for("http://127.0.0.1:8765") is None


def run_kmz(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kleinmaelzung.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


def test_kmz_watch_works_right_after_kmz_demo(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    demo = Process("demo", ["demo", "--port", str(port), "--data", str(tmp_path / "d")], tmp_path)
    # No flags: the hub is the default one would use ($KMZ_HUB here, as the
    # port is not the default), the token is the one the demo saved.
    env = {**os.environ, "KMZ_HUB": url}
    try:
        wait_until(lambda: token_for(url), "the demo's token saved", 30.0, demo)

        def watch_once() -> subprocess.CompletedProcess[str] | None:
            result = run_kmz(env, "watch", "kiln-air", "--count", "1", "--json")
            return result if result.returncode == 0 else None

        watched = wait_until(watch_once, "kmz watch to print a reading", 30.0, demo)
        assert json.loads(watched.stdout)["instrument"] == "kiln-air"
        sent = run_kmz(env, "send", "balance", "tare")
        assert sent.returncode == 0, sent.stderr
        audit = run_kmz(env, "log", "--kind", "command", "--json")
        assert audit.returncode == 0, audit.stderr
        entries = json.loads(audit.stdout)
        asked = [e for e in entries if e["type"] == "command" and e["direction"] == "in"]
        assert asked and asked[0]["peer"].endswith("/kmz-send@demo-admin")
        assert any(e["type"] == "reply" for e in entries)
        # Without the token: refused, and told why.
        stranger = {**env, "XDG_CONFIG_HOME": str(tmp_path / "elsewhere")}
        refused = run_kmz(stranger, "watch", "kiln-air", "--count", "1")
        assert refused.returncode == 3
        assert "requires a token" in refused.stderr
        denied = run_kmz(stranger, "log")
        assert denied.returncode == 1 and "unauthorized" in denied.stderr
        # The database holds no plaintext token.
        secret = token_for(url)
        assert secret is not None
        stored = b"".join(p.read_bytes() for p in (tmp_path / "d").iterdir() if p.is_file())
        assert secret.split("_", 2)[2].encode() not in stored
    finally:
        demo.stop()


async def test_http_calls_find_the_saved_token(tmp_path: Path) -> None:
    from kleinmaelzung.client import RequestError, fetch_log

    from .hub.auth_setup import auth_lab

    async with auth_lab(tmp_path) as lab:
        with pytest.raises(RequestError) as refused:
            await fetch_log(lab.url)
        assert refused.value.code == "unauthorized"
        save_token(lab.url, lab.tokens["ada"])
        assert await fetch_log(lab.url, kind="refused")  # the refusal above, audited
        with pytest.raises(RequestError):
            await fetch_log(lab.url, token="")  # explicitly none


async def test_a_client_finds_the_saved_token(tmp_path: Path) -> None:
    """The README's Python example works against `kmz demo`, which requires tokens."""
    from kleinmaelzung.client import Client, HandshakeError

    from .hub.auth_setup import auth_lab

    async with auth_lab(tmp_path) as lab:
        with pytest.raises(HandshakeError):
            async with Client(lab.url):
                pass
        save_token(lab.url, lab.tokens["vic"])
        async with Client(lab.url) as client:
            assert await client.instruments() == []


def test_kmz_hub_refuses_the_network_without_auth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before it listens: nothing binds 0.0.0.0 here.
    status, _, err = kmz(
        capsys, "hub", "--host", "0.0.0.0", "--port", "0", "--data", str(tmp_path / "d")
    )
    assert status == 1
    assert "without authentication" in err and "--insecure" in err
