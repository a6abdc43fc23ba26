"""TOML config files for the agent and the hub: read, convert, and say what is wrong where.

Every error names the file, the key and what was expected, because the reader
stands next to the Pi or the server, not the source. Pure: tomllib and
msgspec, no I/O beyond reading the one file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING = object()


class ConfigFileError(ValueError):
    """A config file cannot be used; the message says where and why."""


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The file's TOML as a mapping; `ConfigFileError` naming the file if unreadable."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{name}: cannot read the file: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{name}: not valid TOML: {exc}") from None


def convert(raw: Mapping[str, Any], kind: type[T], source: str, hints: Mapping[str, str]) -> T:
    """`raw` as a `kind` Struct; `ConfigFileError` naming `source`, the key and the expectation."""
    try:
        return msgspec.convert(raw, kind, dec_hook=_decode_extra)
    except msgspec.ValidationError as exc:
        raise ConfigFileError(explain(source, raw, str(exc), hints)) from None


def _decode_extra(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(f"{kind} from config files")


def explain(source: str, raw: Mapping[str, Any], message: str, hints: Mapping[str, str]) -> str:
    """A msgspec validation message as a user reads it: file, key, expected, got."""
    match = _AT.match(message)
    assert match is not None  # the pattern matches any text
    what, path = match["what"], match["path"] or ""
    dotted = path.lstrip(".")
    key = re.sub(r"\[\d+\]", "", dotted.rsplit(".", 1)[-1]) if dotted else ""
    got = _value_at(raw, path)
    if what.startswith("Object contains unknown field"):
        field = what.split("`")[1] if "`" in what else "?"
        where = f"{dotted}.{field}" if dotted else field
        return f"{source}: {where}: unknown key (a typo?)"
    if what.startswith("Object missing required field"):
        field = what.split("`")[1] if "`" in what else "?"
        where = f"{dotted}.{field}" if dotted else field
        hint = hints.get(field)
        return f"{source}: {where}: required key is missing" + (
            f"; expected {hint}" if hint else ""
        )
    hint = hints.get(key)
    # msgspec says "Expected `int`, got `str`": the value itself is shown below.
    what = re.sub(r", got `[^`]*`$", "", what)
    expected = f"expected {hint}" if hint else what[0].lower() + what[1:]
    shown = f", got {show(got)}" if got is not _MISSING else ""
    return f"{source}: {dotted or '(top level)'}: {expected}{shown}"


def _value_at(raw: Any, path: str) -> Any:
    value = raw
    for name, index in re.findall(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]", path):
        try:
            value = value[name] if name else value[int(index)]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return value


def show(value: Any) -> str:
    """A config value as the user wrote it in TOML."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def env_overrides(
    prefix: str, env: Mapping[str, str], tables: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Settings from `{prefix}KEY` and `{prefix}TABLE__KEY` environment variables.

    Values are read as TOML values when they parse (`8765`, `true`, `2.5`,
    `["a"]`), else as strings (`/var/lib/kmz`), so `KMZ_HUB_PORT=8765` and
    `KMZ_HUB_HOST=0.0.0.0` both do what they say.
    """
    settings: dict[str, Any] = {}
    for name, text in env.items():
        if not name.startswith(prefix) or not text:
            continue
        key = name[len(prefix) :].lower()
        table, _, sub = key.partition("__")
        value = _toml_value(text)
        if sub and table in tables:
            settings.setdefault(table, {})[sub] = value
        elif not sub:
            settings[key] = value
    return settings


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override` on top; tables merge key by key."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = {**result[key], **value}
        else:
            result[key] = value
    return result
