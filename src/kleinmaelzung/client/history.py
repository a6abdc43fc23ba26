"""An instrument's history from the hub (``GET /api/history``): a list of points, or a DataFrame.

Each `HistoryPoint` is one bucket of `every` seconds: the mean of each
channel in `values` (as a sample has them), and the count, minimum and
maximum beside. `as_frame` turns them into a pandas DataFrame indexed by
time (UTC), one column per channel (the means); pandas comes with the
``data`` extra (``pip install 'kleinmaelzung[data]'``).

Times are UNIX seconds, `datetime`s, or text as `kmz` takes it: ``-24h``,
``2026-11-01``, ``2026-11-01T03:12`` (a time without a zone is local time).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ..protocol import (
    History,
    KmzError,
    QueryHistory,
    TimeFormatError,
    parse_duration,
    parse_time,
)
from ..transport import base_url
from .http import get_decoded

if TYPE_CHECKING:
    import pandas

#: What a time may be given as.
TimeLike = float | int | datetime | str

_history_decoder = msgspec.json.Decoder(History)


class MissingExtra(KmzError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One bucket of an instrument's history: its start, and each channel's statistics."""

    #: The start of the bucket (UNIX seconds); it covers ``[ts, ts + every)``.
    ts: float
    #: The mean of each channel that had a numeric sample in the bucket.
    values: dict[str, float]
    minimum: dict[str, float]
    maximum: dict[str, float]
    count: dict[str, int]
    #: The mean of each calibrated channel's corrected values, where samples
    #: of the bucket were taken while an approved calibration was in force.
    corrected: dict[str, float] = field(default_factory=dict)
    #: The calibration that corrected each of them (the newest, should two
    #: share the bucket): certificate number and revision.
    calibration: dict[str, str] = field(default_factory=dict)


def to_timestamp(value: TimeLike, *, now: float | None = None) -> float:
    """UNIX seconds of a time given as a number, a `datetime` (naive: local) or text."""
    if isinstance(value, bool):
        raise TypeError("a time must be a number, a datetime or text, not a bool")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return parse_time(value, now=time.time() if now is None else now, zone=None)
    except TimeFormatError as exc:
        raise ValueError(str(exc)) from None


async def fetch_history(
    url: str,
    instrument: str,
    *,
    since: TimeLike = "-1h",
    until: TimeLike | None = None,
    channels: Iterable[str] = (),
    every: float | str | None = None,
    points: int | None = None,
    timeout_s: float = 30.0,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> History:
    """The hub's answer for one instrument's history, as it came (columnar, `protocol.History`).

    `every`: the bucket width in seconds (or ``"1m"``); without it the range
    is cut into `points` buckets (the hub's default: 1000).
    """
    now = time.time()
    params = {"since": repr(to_timestamp(since, now=now))}
    if until is not None:
        params["until"] = repr(to_timestamp(until, now=now))
    names = list(channels)
    if names:
        params["channel"] = ",".join(names)
    if every is not None:
        params["every"] = str(every)
    if points is not None:
        params["points"] = str(points)
    endpoint = f"{base_url(url)}/api/history/{instrument}"
    return await get_decoded(
        _history_decoder,
        endpoint,
        params=params,
        timeout_s=timeout_s,
        token=token,
        ca_file=ca_file,
        pin_sha256=pin_sha256,
    )


def history_request(
    request_id: str,
    instrument: str,
    *,
    since: TimeLike,
    until: TimeLike | None,
    channels: Iterable[str],
    every: float | str | None,
    points: int | None,
) -> QueryHistory:
    """The `history_query` message for these arguments (protocol 4: `Client.history`)."""
    now = time.time()
    if isinstance(every, str):
        try:
            every = parse_duration(every)
        except TimeFormatError as exc:
            raise ValueError(str(exc)) from None
    return QueryHistory(
        id=request_id,
        instrument=instrument,
        since=to_timestamp(since, now=now),
        until=None if until is None else to_timestamp(until, now=now),
        every=every,
        points=points,
        channels=list(channels),
    )


async def load_history(
    url: str,
    instrument: str,
    *,
    since: TimeLike = "-1h",
    until: TimeLike | None = None,
    channels: Iterable[str] = (),
    every: float | str | None = None,
    points: int | None = None,
    as_frame: bool = False,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> list[HistoryPoint] | pandas.DataFrame:
    """`fetch_history`, as `HistoryPoint`s or (`as_frame`) a DataFrame of means."""
    if as_frame:
        require_pandas()  # before asking the hub: the error names the extra at once
    answer = await fetch_history(
        url,
        instrument,
        since=since,
        until=until,
        channels=channels,
        every=every,
        points=points,
        token=token,
        ca_file=ca_file,
        pin_sha256=pin_sha256,
    )
    return history_frame(answer) if as_frame else history_points(answer)


def history_points(history: History) -> list[HistoryPoint]:
    """The buckets of an answer as points, oldest first."""
    points = []
    for index, ts in enumerate(history.t):
        values: dict[str, float] = {}
        minimum: dict[str, float] = {}
        maximum: dict[str, float] = {}
        count: dict[str, int] = {}
        for name, series in history.series.items():
            mean = series.mean[index]
            if mean is None or series.count[index] == 0:
                continue
            low, high = series.min[index], series.max[index]
            values[name] = mean
            minimum[name] = mean if low is None else low
            maximum[name] = mean if high is None else high
            count[name] = series.count[index]
        corrected: dict[str, float] = {}
        calibration: dict[str, str] = {}
        for name, series in history.corrected.items():
            mean = series.mean[index]
            if mean is None or series.count[index] == 0:
                continue
            corrected[name] = mean
            for span in history.calibrations:
                if span.channel == name and span.since < ts + history.every and span.until > ts:
                    calibration[name] = span.calibration
        points.append(HistoryPoint(ts, values, minimum, maximum, count, corrected, calibration))
    return points


def history_frame(history: History, statistics: Sequence[str] = ("mean",)) -> pandas.DataFrame:
    """A DataFrame indexed by time (UTC), one column per channel.

    With one statistic (default ``mean``) the columns are the channels'
    names; with several (``("mean", "min", "max", "count")``) they are
    (channel, statistic) pairs. Needs pandas (the ``data`` extra).
    """
    pandas = require_pandas()
    unknown = set(statistics) - {"mean", "min", "max", "count"}
    if unknown or not statistics:
        raise ValueError(f"statistics are mean, min, max, count; got {sorted(unknown)}")
    index = pandas.to_datetime(history.t, unit="s", utc=True)
    index.name = "time"
    columns: dict[Any, list[Any]] = {}
    for name, series in history.series.items():
        for statistic in statistics:
            key: Any = name if len(statistics) == 1 else (name, statistic)
            columns[key] = getattr(series, statistic)
    frame = pandas.DataFrame(columns, index=index)
    if len(statistics) > 1:
        frame.columns = pandas.MultiIndex.from_tuples(list(columns), names=["channel", "statistic"])
    return frame.astype({k: "float64" for k in columns if not _is_count(k)})


def _is_count(key: Any) -> bool:
    return isinstance(key, tuple) and key[1] == "count"


def require_pandas() -> Any:
    """The pandas module; `MissingExtra` naming the extra if it is not installed."""
    try:
        import pandas
    except ImportError:
        raise MissingExtra(
            "pandas is not installed: pip install 'kleinmaelzung[data]' "
            "(or ask for the history without as_frame)"
        ) from None
    return pandas
