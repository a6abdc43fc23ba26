"""``GET /api/history/INSTRUMENT``: one instrument's channels over a time range, downsampled.

Parameters (all optional)::

    since=T (default: an hour before until)   until=T (default: now)
    every=DURATION (1m, 10s, 0.5, ...)         points=N (default 1000, at most 10000)
    channel=NAME (repeated or comma-separated; default: every numeric channel)

Times are UNIX seconds, ``-1h``-style relative to the hub's clock, or ISO
8601 (UTC unless they name a zone); the range is ``since <= ts < until`` in
the instrument's (agent's) time. Without `every`, the range is cut into
`points` buckets (a dashboard asks for about one per pixel, and again for
each zoom). The database groups the samples (count, min, max and mean of each
numeric channel per bucket): a month of 1 Hz readings leaves it as a thousand
rows. Buckets of a minute or more merge the per-minute summaries a
background task keeps (`store.summaries`), exactly, and read only the rest
from the samples: a month's plot takes 0.1-0.2 s rather than 4-12 s. The
answer is `protocol.History` (its docstring and ``docs/data.md`` show it), at
most 1 MiB like every answer of the hub: too many buckets times channels is
refused with ``invalid_arguments``, saying what to narrow.

Where an approved calibration was in force (`corrections`), the answer also
holds the corrected channel's statistics (`History.corrected`) and which
calibration was in force when (`History.calibrations`);
`history_corrections` says how they are computed.

Who may ask: whoever may watch the instrument (`auth.web`, checked again here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from ..protocol import Channel, ChannelSeries, ErrorCode, History
from .auth.web import principal_of
from .history_corrections import corrected_rows, with_corrections
from .params import (
    BadParameter,
    channel_params,
    duration_param,
    instrument_id,
    int_param,
    problem,
    time_param,
)
from .services import HUB_KEY
from .store import StoreError
from .store.queries import HistoryRow

if TYPE_CHECKING:
    from .services import Hub

#: Buckets one answer may hold, and how many it holds unless asked.
MAX_BUCKETS = 10_000
DEFAULT_POINTS = 1000
#: The range when `since` is not given: an hour before `until`.
DEFAULT_RANGE_S = 3600.0

_encoder = msgspec.json.Encoder()


async def history(request: web.Request) -> web.Response:
    """`GET /api/history/{instrument}`: count, min, max and mean per bucket and channel."""
    hub = request.app[HUB_KEY]
    params = request.query
    try:
        instrument = instrument_id(request.match_info["instrument"])
        now = hub.clock()
        until = time_param(params, "until", now=now)
        until = now if until is None else until
        since = time_param(params, "since", now=now)
        since = until - DEFAULT_RANGE_S if since is None else since
        if since >= until:
            raise BadParameter(f"since ({since}) must be before until ({until})")
        every = duration_param(params, "every")
        points = int_param(params, "points", DEFAULT_POINTS, 1, MAX_BUCKETS)
        if every is None:
            every = (until - since) / points
        elif (until - since) / every > MAX_BUCKETS:
            raise BadParameter(
                f"every={every:g} s cuts {until - since:g} s into more than {MAX_BUCKETS} "
                "buckets: ask a larger every or a shorter range"
            )
        channels = channel_params(params)
    except BadParameter as exc:
        return problem(exc)
    principal = principal_of(request)
    if not principal.may_watch(instrument):
        return problem(
            BadParameter(
                f"{principal.name} may not read the history of {instrument!r}", "forbidden"
            ),
            status=403,
        )
    try:
        answer = await load_history(hub, instrument, since, until, every, channels)
    except StoreError as exc:
        return problem(BadParameter(str(exc), ErrorCode.INTERNAL_ERROR), status=503)
    body = _encoder.encode(answer)
    limits = hub.config.limits
    budget = min(limits.max_message_bytes, limits.max_hub_message_bytes)
    if len(body) > budget:
        return problem(
            BadParameter(
                f"the answer would be {len(body):,} bytes, more than the {budget:,} an answer "
                f"may be: ask fewer points, a larger every, or name channels"
            )
        )
    return web.Response(body=body, content_type="application/json")


async def load_history(
    hub: Hub, instrument: str, since: float, until: float, every: float, channels: Sequence[str]
) -> History:
    """The history of `instrument`, raw and, where a calibration was in force, corrected.

    Raises `StoreError` if the log cannot be read.
    """
    rows = await hub.store.history(instrument, since, until, every, channels)
    entry = hub.registry.instruments.get(instrument)
    declared = entry.info.channels if entry is not None else []
    answer = build_history(instrument, since, until, every, rows, declared)
    versions = [
        v
        for v in hub.corrections.overlapping(instrument, since, until)
        if not channels or v.channel in channels
    ]
    if not versions or not rows:
        return answer
    corrected: list[HistoryRow] = []
    for version in versions:
        corrected += await corrected_rows(hub.store, instrument, since, until, every, rows, version)
    return with_corrections(answer, corrected, versions)


def build_history(
    instrument: str,
    since: float,
    until: float,
    every: float,
    rows: list[HistoryRow],
    declared: list[Channel],
) -> History:
    """The columnar answer from the database's rows (one per bucket and channel)."""
    buckets = sorted({row.bucket for row in rows})
    position = {bucket: index for index, bucket in enumerate(buckets)}
    size = len(buckets)
    present = {row.channel for row in rows}
    # In the order the instrument declares them, then any it did not declare.
    names = [c.name for c in declared if c.name in present]
    names += sorted(present - set(names))
    series: dict[str, ChannelSeries] = {}
    for name in names:
        series[name] = ChannelSeries(
            count=[0] * size, min=[None] * size, max=[None] * size, mean=[None] * size
        )
    for row in rows:
        index = position[row.bucket]
        column = series[row.channel]
        column.count[index] = row.samples
        column.min[index] = float(row.minimum)
        column.max[index] = float(row.maximum)
        column.mean[index] = float(row.mean)
    units = {channel.name: channel for channel in declared}
    return History(
        instrument=instrument,
        since=since,
        until=until,
        every=every,
        channels=[units.get(name, Channel(name=name)) for name in names],
        t=[since + bucket * every for bucket in buckets],
        series=series,
    )
