"""A driver's own settings: the `[instruments.settings]` table decoded into its Struct."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

from ..config import InstrumentConfig

S = TypeVar("S")

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


class SettingsError(ValueError):
    """A driver setting is wrong; `key` names it (`settings.registers[2].type`)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def decode_settings(config: InstrumentConfig, settings_type: type[S]) -> S:
    """`config.settings` as the driver's Struct; `SettingsError` naming the key if it is wrong.

    Use a Struct with `forbid_unknown_fields=True`, so that a typo is an error,
    not a default silently taken.
    """
    try:
        return msgspec.convert(config.settings, settings_type)
    except msgspec.ValidationError as exc:
        match = _AT.match(str(exc))
        assert match is not None  # the pattern matches any text
        what, path = match["what"], (match["path"] or "")
        if what.startswith(("Object contains unknown field", "Object missing required field")):
            field = what.split("`")[1] if "`" in what else "?"
            path = f"{path}.{field}"
            what = (
                "unknown key (a typo?)"
                if what.startswith("Object contains")
                else "required key is missing"
            )
        else:
            what = what[0].lower() + what[1:]
            given = _value_at(config.settings, path)
            if given is not _MISSING and repr(given) not in what:
                what += f", got {given!r}"
        key = "settings" + path
        raise SettingsError(key, what) from None


_MISSING = object()


def _value_at(raw: object, path: str) -> object:
    """The value at a msgspec path such as `.registers[2].type`, or `_MISSING`."""
    value = raw
    for name, index in re.findall(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]", path):
        try:
            value = value[name] if name else value[int(index)]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return value
