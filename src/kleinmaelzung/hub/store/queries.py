"""Questions the traffic log answers beyond "the newest N": what each backend turns into SQL.

`LogQuery` filters the log (time range, instrument glob, peer, direction,
types, free text) and pages through it by keyset: a page ends at an entry's
`id`, and the next page starts after it (``id < cursor`` newest first, ``id >
cursor`` oldest first), so page 1,000 costs what page 1 does, never an OFFSET
scan. `where_clause` writes its WHERE for either backend's placeholders.

`HistoryRow` is one bucket of one channel of a downsampled history: the
database groups an instrument's samples by ``floor((ts - start) / every)`` and
returns count, min, max and mean of each numeric channel per bucket.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, NamedTuple

from ...protocol import is_literal
from .base import Direction

#: How a backend writes the n-th (1-based) parameter: ``?`` or ``$n``.
Placeholder = Callable[[int], str]
Dialect = Literal["sqlite", "postgresql"]


@dataclass(frozen=True, slots=True)
class LogQuery:
    """Which traffic-log entries to return; every filter given must hold."""

    #: Hub time: entries with ``since <= ts < until``.
    since: float | None = None
    until: float | None = None
    #: An instrument id, or a glob over ids (``kiln-*``).
    instrument: str | None = None
    #: A glob over peer names (``client-*@olga``), matched against each name of
    #: an entry's peer and of its recipients (`delivered_to`).
    peer: str | None = None
    direction: Direction | None = None
    #: Message types (any of them); empty: every type.
    types: tuple[str, ...] = field(default=())
    #: Text the logged message contains (case-insensitive; on SQLite for ASCII letters only).
    text: str | None = None
    #: Keyset cursor: the `id` of the last entry of the previous page.
    after_id: int | None = None
    oldest_first: bool = False


def where_clause(
    query: LogQuery, dialect: Dialect, placeholder: Placeholder
) -> tuple[str, list[object]]:
    """The WHERE clause (``""`` if none) and its parameters, for `query` on one backend."""
    where: list[str] = []
    params: list[object] = []

    def param(value: object) -> str:
        params.append(value)
        return placeholder(len(params))

    def time(ts: float) -> object:
        return ts if dialect == "sqlite" else datetime.fromtimestamp(ts, UTC)

    if query.since is not None:
        where.append(f"ts >= {param(time(query.since))}")
    if query.until is not None:
        where.append(f"ts < {param(time(query.until))}")
    if query.instrument is not None:
        # SQLite has no statistics to choose an index by, and took the
        # instrument's for a pattern or a window of time, then sorted what it
        # found: 7 s for `kiln-0*` over an hour of 2M rows. "+instrument"
        # keeps it off that index, so a window is read by time (0.4 ms).
        column = "instrument"
        windowed = query.since is not None and query.until is not None
        if dialect == "sqlite" and (windowed or not is_literal(query.instrument)):
            column = "+instrument"
        if is_literal(query.instrument):
            where.append(f"{column} = {param(query.instrument)}")
        elif dialect == "sqlite":
            where.append(f"{column} GLOB {param(sqlite_glob(query.instrument))}")
        else:
            where.append(f"instrument ~ {param(posix_regex(query.instrument))}")
    if query.peer is not None:
        # Each comma-separated name: a status to three clients names all three.
        if dialect == "sqlite":
            glob = "*," + sqlite_glob(query.peer) + ",*"
            where.append(
                f"((',' || peer || ',') GLOB {param(glob)}"
                f" OR (',' || coalesce(delivered_to, '') || ',') GLOB {param(glob)})"
            )
        else:
            pattern = param("," + posix_regex(query.peer, anchored=False, stop=",") + ",")
            where.append(
                f"((',' || peer || ',') ~ {pattern}"
                f" OR (',' || coalesce(delivered_to, '') || ',') ~ {pattern})"
            )
    if query.direction is not None:
        where.append(f"direction = {param(query.direction)}")
    if query.types:
        if dialect == "sqlite":
            where.append(f"type IN ({', '.join(param(t) for t in query.types)})")
        else:
            where.append(f"type = ANY({param(list(query.types))}::text[])")
    if query.text:
        operator = "LIKE" if dialect == "sqlite" else "ILIKE"
        where.append(
            f"message {operator} {param('%' + _like_escaped(query.text) + '%')} ESCAPE '\\'"
        )
    if query.after_id is not None:
        where.append(f"id {'>' if query.oldest_first else '<'} {param(query.after_id)}")
    return (" WHERE " + " AND ".join(where)) if where else "", params


def order_clause(query: LogQuery) -> str:
    """Log order: by `id`, the order the hub logged entries in."""
    return " ORDER BY id" + ("" if query.oldest_first else " DESC")


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def sqlite_glob(pattern: str) -> str:
    """A protocol glob (`fnmatch`'s ``[!...]``) as SQLite's GLOB writes it (``[^...]``)."""
    return pattern.replace("[!", "[^")


def posix_regex(pattern: str, *, anchored: bool = True, stop: str = "") -> str:
    """A glob as a PostgreSQL regular expression; ``*`` and ``?`` never match a `stop` character."""
    out: list[str] = []
    index = 0
    any_char = f"[^{stop}]" if stop else "."
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            out.append(any_char + "*")
        elif char == "?":
            out.append(any_char)
        elif char == "[" and "]" in pattern[index + 1 :]:
            end = pattern.index("]", index + 1)
            body = pattern[index + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            body = "".join("\\" + c if c in "\\^[]" else c for c in body)
            out.append("[" + ("^" if negate else "") + body + "]")
            index = end
        elif char.isalnum() or char in "_-@":
            out.append(char)
        else:
            out.append("\\" + char)
        index += 1
    regex = "".join(out)
    return f"^{regex}$" if anchored else regex


class HistoryRow(NamedTuple):
    """One bucket of one channel: its samples' count, min, max and mean."""

    #: ``floor((ts - start) / every)``: the bucket starts at ``start + bucket * every``.
    bucket: int
    channel: str
    samples: int
    minimum: float
    maximum: float
    mean: float


class ExportRow(NamedTuple):
    """One logged sample as an export reads it: its values still JSON."""

    ts: float
    run: str | None
    seq: int
    #: The channel values as the agent sent them: a JSON object.
    values: str
