"""Where `kmz` finds the token for a hub: ``$KMZ_TOKEN``, else the user's tokens file.

The tokens file is ``$XDG_CONFIG_HOME/kleinmaelzung/tokens.toml`` (by default
``~/.config/kleinmaelzung/tokens.toml``), one table per hub base URL::

    ["http://127.0.0.1:8765"]
    token = "kmz_0123456789ab_..."

It is created readable by its owner only (0600, its folder 0700), and a file
that others may read is ignored with a warning, as ssh does with keys:
whoever reads it can act as its owner. `kmz demo` writes the demo hub's admin
token there, so that `kmz watch` on the same machine works with no flags;
`kmz token create --save` does the same for another hub.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tomllib
from pathlib import Path

from ..transport import base_url

_log = logging.getLogger(__name__)

ENV_TOKEN = "KMZ_TOKEN"


def tokens_path() -> Path:
    """The user's tokens file (it may not exist)."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "kleinmaelzung" / "tokens.toml"


def token_for(url: str) -> str | None:
    """The token to present to the hub at `url`: ``$KMZ_TOKEN``, else the tokens file's."""
    from_env = os.environ.get(ENV_TOKEN)
    if from_env:
        return from_env
    return _read().get(base_url(url))


def save_token(url: str, token: str) -> Path:
    """Keep `token` as the one for the hub at `url`, replacing any; return the file."""
    path = tokens_path()
    tokens = _read()
    tokens[base_url(url)] = token
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = ["# kmz tokens, one table per hub URL (kmz demo, kmz token create --save)\n"]
    for hub, value in sorted(tokens.items()):
        # JSON strings of ASCII text are valid TOML basic strings.
        lines.append(f"\n[{json.dumps(hub)}]\ntoken = {json.dumps(value)}\n")
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        os.write(fd, "".join(lines).encode())
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return path


def _read() -> dict[str, str]:
    path = tokens_path()
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            _log.warning(
                "tokens file ignored: others may read it (chmod 600 it)", extra={"file": str(path)}
            )
            return {}
        with path.open("rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        _log.warning("tokens file unreadable", extra={"file": str(path), "error": str(exc)})
        return {}
    tokens: dict[str, str] = {}
    for hub, table in document.items():
        token = table.get("token") if isinstance(table, dict) else None
        if isinstance(token, str):
            tokens[hub] = token
    return tokens
