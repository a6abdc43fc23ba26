"""Checking a command's arguments against what the instrument declares: hub and agent alike.

The hub checks before it forwards, so a client learns at once what was wrong
and an agent never sees a command it would refuse; the agent checks again,
because it may be driven by a hub of another version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .messages import CommandArg, CommandSpec


def check_arguments(spec: CommandSpec, args: Mapping[str, Any]) -> str | None:
    """Say what is wrong with a command's arguments, or None if they fit its spec."""
    declared = {a.name: a for a in spec.args}
    extra = sorted(set(args) - set(declared))
    if extra:
        accepted = ", ".join(declared) or "no arguments"
        return f"{spec.name} takes {accepted}; unexpected: {', '.join(extra)}"
    for name, arg in declared.items():
        if name not in args:
            return f"{spec.name} needs argument {name!r} ({arg.type})"
        problem = _check_value(arg, args[name])
        if problem is not None:
            return problem
    return None


def _check_value(arg: CommandArg, value: Any) -> str | None:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    fits = {
        "float": is_number,
        "int": isinstance(value, int) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
    }[arg.type]
    if not fits:
        return f"argument {arg.name!r} must be {arg.type}, got {value!r}"
    if arg.minimum is not None and value < arg.minimum:
        return f"argument {arg.name!r} must be at least {arg.minimum:g}, got {value!r}"
    if arg.maximum is not None and value > arg.maximum:
        return f"argument {arg.name!r} must be at most {arg.maximum:g}, got {value!r}"
    return None
