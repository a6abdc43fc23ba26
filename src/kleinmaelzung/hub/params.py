"""Reading the HTTP API's query parameters: times, durations, ids, globs, numbers.

A parameter that cannot be read raises `BadParameter`, which the route turns
into HTTP 400 with ``{"code": "invalid_arguments", "message": ...}`` naming
the parameter and what it takes.
"""

from __future__ import annotations

import msgspec
from aiohttp import web
from multidict import MultiMapping

from ..protocol import (
    ID_RULE,
    NAME_RULE,
    PATTERN_RULE,
    ErrorCode,
    TimeFormatError,
    is_instrument_id,
    is_name,
    is_pattern,
    parse_duration,
    parse_time,
)


class BadParameter(ValueError):
    """A query parameter the route cannot use; `code` and message go to the caller."""

    def __init__(self, message: str, code: str = ErrorCode.INVALID_ARGUMENTS) -> None:
        super().__init__(message)
        self.code = code


def problem(exc: BadParameter, status: int = 400) -> web.Response:
    """The answer to a request with a bad parameter."""
    return web.Response(
        body=msgspec.json.encode({"code": exc.code, "message": str(exc)}),
        status=status,
        content_type="application/json",
    )


def time_param(query: MultiMapping[str], name: str, *, now: float) -> float | None:
    """A time (UNIX seconds, ``-1h``, ISO 8601; UTC if it names no zone), or None if absent."""
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        return parse_time(text, now=now)
    except TimeFormatError as exc:
        raise BadParameter(f"{name}: {exc}") from None


def duration_param(query: MultiMapping[str], name: str) -> float | None:
    """A duration (``1m``, ``10s``, or seconds), or None if absent."""
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        return parse_duration(text)
    except TimeFormatError as exc:
        raise BadParameter(f"{name}: {exc}") from None


def int_param(query: MultiMapping[str], name: str, default: int, low: int, high: int) -> int:
    """An integer in ``low..high``; `default` if absent."""
    text = query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(f"{name} must be an integer, got {text!r}") from None
    if not low <= value <= high:
        raise BadParameter(f"{name} must be {low}..{high}, got {value}")
    return value


def pattern_param(query: MultiMapping[str], name: str) -> str | None:
    """An instrument id or a glob over ids, or None if absent."""
    text = query.get(name)
    if text is None:
        return None
    if not is_pattern(text):
        raise BadParameter(
            f"{name}: not an instrument id or pattern: {text!r} ({PATTERN_RULE})",
            ErrorCode.INVALID_INSTRUMENT_ID,
        )
    return text


def instrument_id(text: str) -> str:
    """`text` if it is an instrument id."""
    if not is_instrument_id(text):
        raise BadParameter(
            f"not an instrument id: {text!r} ({ID_RULE})", ErrorCode.INVALID_INSTRUMENT_ID
        )
    return text


def channel_params(query: MultiMapping[str]) -> tuple[str, ...]:
    """The channels named by ``channel=`` (repeated, or comma-separated)."""
    names: list[str] = []
    for value in query.getall("channel", []):
        for name in value.split(","):
            if not is_name(name):
                raise BadParameter(f"channel: not a channel name: {name!r} ({NAME_RULE})")
            if name not in names:
                names.append(name)
    return tuple(names)


def choice_param(query: MultiMapping[str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices`; the first if absent."""
    text = query.get(name, choices[0])
    if text not in choices:
        raise BadParameter(f"{name} must be one of {', '.join(choices)}; got {text!r}")
    return text
