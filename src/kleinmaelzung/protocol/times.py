"""Times and durations as people write them in queries: ``-1h``, ``2026-11-01T12:00``, ``1m``.

Used by the hub's HTTP API (``since``, ``until``, ``every``) and by `kmz`.
Pure: the present (`now`) is passed in, and so is the zone of a time written
without one (the hub takes UTC; `kmz` the user's local zone, converting
before it asks).

- a UNIX time in seconds: ``1795557249.5``
- relative to now: ``-90s``, ``-15m``, ``-1h``, ``-2d``, ``-1w``, and ``now``
- ISO 8601: ``2026-11-01``, ``2026-11-01T03:12``, ``2026-11-01 03:12:00.5+01:00``,
  ``...Z``
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, tzinfo

#: Seconds per unit of a duration (``every=1m``) or a relative time (``-1h``).
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

_DURATION = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d|w)$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")

TIME_RULE = (
    "a UNIX time in seconds, 'now', a time relative to now such as -90s, -15m, -1h, -2d, -1w, "
    "or an ISO 8601 date or time such as 2026-11-01 or 2026-11-01T03:12:00Z"
)
DURATION_RULE = "a number with a unit: ms, s, m, h, d or w (such as 500ms, 10s, 1m, 1h)"


class TimeFormatError(ValueError):
    """A time or duration that cannot be read; the message says what was expected."""


def parse_duration(text: str) -> float:
    """Seconds of a duration such as ``10s``, ``1m``, ``1.5h``; a plain number is seconds."""
    text = text.strip()
    if _NUMBER.match(text) and not text.startswith("-"):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if match is None:
            raise TimeFormatError(f"expected {DURATION_RULE}, got {text!r}")
        seconds = float(match["number"]) * UNITS[match["unit"]]
    if not math.isfinite(seconds) or seconds <= 0:
        raise TimeFormatError(f"a duration must be more than 0, got {text!r}")
    return seconds


def parse_time(text: str, *, now: float, zone: tzinfo | None = UTC) -> float:
    """The UNIX time `text` names.

    `zone` is taken for an ISO time written without one; None: this
    machine's local time (with its daylight saving on that date).
    """
    text = text.strip()
    if text == "now":
        return now
    if _NUMBER.match(text):
        return float(text)
    if text.startswith("-"):
        try:
            return now - parse_duration(text[1:])
        except TimeFormatError:
            raise TimeFormatError(f"expected {TIME_RULE}, got {text!r}") from None
    try:
        # Python 3.11 reads "Z", a space for "T", and dates without a time.
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise TimeFormatError(f"expected {TIME_RULE}, got {text!r}") from None
    if moment.tzinfo is None and zone is not None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()  # a naive datetime is local time here


def format_time(ts: float) -> str:
    """A UNIX time as ISO 8601 in UTC with milliseconds: ``2026-11-01T03:12:00.250Z``."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
