"""Instrument configurations as TOML text: what an agent reports to the hub, and what
`kmz agent-config get` prints for an admin to edit.

Only keys that differ from their defaults are written, so the text reads like a
file a person wrote. The standard library reads TOML but does not write it;
this writes the subset instrument tables use (strings, numbers, booleans,
lists, tables), and a test reads every output back with `tomllib`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from .config import InstrumentConfig


def dump_instruments(instruments: Sequence[InstrumentConfig]) -> str:
    """The instruments as ``[[instruments]]`` tables, each with its ``settings`` table."""
    fields = msgspec.structs.fields(InstrumentConfig)
    blocks = []
    for instrument in instruments:
        lines = ["[[instruments]]"]
        settings: Mapping[str, Any] = {}
        for field in fields:
            value = getattr(instrument, field.name)
            if field.name == "settings":
                settings = value
                continue
            if field.name != "id" and value == _default(field):
                continue
            lines.append(f"{_key(field.encode_name)} = {_value(value)}")
        if settings:
            lines.append("[instruments.settings]")
            lines += [f"{_key(k)} = {_value(v)}" for k, v in settings.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _default(field: msgspec.structs.FieldInfo) -> Any:
    if field.default is not msgspec.NODEFAULT:
        return field.default
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return msgspec.NODEFAULT


def _key(name: str) -> str:
    bare = name and all(c.isalnum() or c in "-_" for c in name) and name.isascii()
    return name if bare else _string(name)


def _string(text: str) -> str:
    # JSON's escapes are TOML's basic-string escapes, but for \/ (never emitted)
    # and \u for controls, which TOML accepts too.
    return msgspec.json.encode(text).decode()


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
