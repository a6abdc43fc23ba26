"""Instrument ids and subscription patterns (globs over ids)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from functools import lru_cache

#: Instrument and agent ids. Ids appear in URLs, file names, log columns and
#: glob patterns, so they keep to a conservative alphabet.
ID_REGEX = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
ID_RULE = (
    "a lowercase letter or digit followed by up to 63 lowercase letters, digits, '_', '.' or '-'"
)
#: Subscription patterns: globs over ids.
PATTERN_REGEX = r"^[a-z0-9_.*?\[\]!-]{1,64}$"
PATTERN_RULE = (
    "1 to 64 lowercase letters, digits, '_', '.' or '-', "
    "with the wildcards '*' (any run), '?' (one character), '[...]' (one of a set) "
    "and '[!...]' (none of a set)"
)
#: Command, channel and argument names: identifiers, so drivers can map them to methods.
NAME_REGEX = r"^[a-z][a-z0-9_]{0,31}$"
NAME_RULE = "a lowercase letter followed by up to 31 lowercase letters, digits or '_'"

_ID = re.compile(ID_REGEX)
_PATTERN = re.compile(PATTERN_REGEX)
_NAME = re.compile(NAME_REGEX)
_WILDCARDS = frozenset("*?[")


def is_instrument_id(text: str) -> bool:
    """Tell whether `text` is a valid instrument id."""
    return _ID.match(text) is not None


def is_name(text: str) -> bool:
    """Tell whether `text` is a valid command, channel or argument name."""
    return _NAME.match(text) is not None


def is_pattern(text: str) -> bool:
    """Tell whether `text` is a valid subscription pattern."""
    return _PATTERN.match(text) is not None and _brackets_balanced(text)


def is_literal(pattern: str) -> bool:
    """Tell whether a pattern names one id exactly (no wildcards)."""
    return not (_WILDCARDS & set(pattern))


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def matches(pattern: str, instrument_id: str) -> bool:
    """Tell whether `instrument_id` matches the glob `pattern` (case-sensitive)."""
    if is_literal(pattern):
        return pattern == instrument_id
    return _compile(pattern).match(instrument_id) is not None


def matching(pattern: str, instrument_ids: Iterable[str]) -> list[str]:
    """Return the ids that match `pattern`, in the order given."""
    return [i for i in instrument_ids if matches(pattern, i)]


def _brackets_balanced(pattern: str) -> bool:
    depth = 0
    for char in pattern:
        if char == "[":
            if depth:
                return False
            depth = 1
        elif char == "]" and depth:
            depth = 0
    return depth == 0
