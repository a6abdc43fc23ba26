"""Corrected values in a downsampled history, from the versions of each correction.

Computed when history is read, from the versioned correction history
(`Corrections.versions`: which calibration was in force from when until
when), not stored beside each sample when it is written. Why:

- the versions are the record: each is immutable but for its end, set once
  when it is withdrawn or superseded, so what a sample's time falls in never
  changes afterwards, and the past is never rewritten;
- storing would add a corrected copy and a calibration id to every sample row
  of both log backends (a schema version and a migration each, in the
  writer's hot path) for the few channels ever calibrated, and the database
  could not downsample it without a second JSON column to group;
- the live stream applies the same rule (`Corrections.at`, the version in
  force at the sample's own time), so history and what a subscriber saw agree;
  the traffic log keeps the frames as they were sent, corrected values included.

How each bucket is computed, for a version in force over ``[a, b)``:

- buckets wholly inside ``[a, b)`` reuse the database's raw count, min, max
  and mean of the channel. An affine correction (offset, linear fit; the
  corrected value ``x + C(x)`` is ``p x + q``) commutes with the mean, and
  maps min and max to the corrected min and max (swapped if ``p < 0``), so
  these are exact (to the correction's rounding, a tenth of the display step).
- the bucket that holds ``a`` or ``b`` is asked of the database again for the
  part of it inside ``[a, b)`` only (one more grouped query each): samples
  before an approval or after a withdrawal stay uncorrected.
- a correction that is not affine (a polynomial of degree 2 or more, or
  interpolation between points) does not commute with the mean. Up to
  `EXACT_SAMPLES` samples in ``[a, b)`` (an hour at 5 Hz) are read and
  corrected one by one, exactly. Beyond that, min and max are still the
  corrected min and max (exact while the corrected curve rises over the
  bucket, as every instrument's does: a correction's slope is far from -1),
  and the mean is the corrected mean, off by about ``C''/2`` times the
  variance of the bucket's readings: a quadratic correction bending by
  20 mg over 200 g (C'' = 1e-6 per g) and readings spread evenly over 1 g
  within a bucket (variance 1/12 g²) leave it off by 4e-8 g, far below a
  balance's 1 mg display step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..calibration import Correction
from ..protocol import ChannelSeries, History
from ..protocol.messages import CorrectionSpan
from .store import Store
from .store.queries import HistoryRow

#: Samples of one version's span corrected one by one when its correction is not affine.
EXACT_SAMPLES = 20_000


def is_affine(correction: Correction) -> bool:
    """Whether the corrected value is ``p x + q`` over every reading."""
    if correction.coefficients:
        return len(correction.coefficients) <= 2
    return len(correction.points) <= 1  # interpolation is held constant beyond the ends


async def corrected_rows(
    store: Store,
    instrument: str,
    since: float,
    until: float,
    every: float,
    rows: Sequence[HistoryRow],
    version: Correction,
) -> list[HistoryRow]:
    """The corrected channel's rows (history buckets) for the samples `version` corrected."""
    start = max(since, version.valid_from)
    end = until if version.withdrawn_at is None else min(until, version.withdrawn_at)
    if start >= end:
        return []
    channel = version.channel
    if (
        not is_affine(version)
        and await store.count_samples(instrument, start, end) <= EXACT_SAMPLES
    ):
        return await _corrected_one_by_one(store, instrument, since, every, start, end, version)
    first = int((start - since) // every)
    last = int((end - since) // every)  # the bucket holding `end` (maybe past the range)
    out: list[HistoryRow] = []
    if first == last:
        return await _partial(store, instrument, first, start, end, version)
    inner_first = first
    if start > since + first * every:
        out += await _partial(store, instrument, first, start, since + (first + 1) * every, version)
        inner_first = first + 1
    out += [
        _mapped(row, version)
        for row in rows
        if row.channel == channel and inner_first <= row.bucket < last
    ]
    tail = since + last * every
    if tail < end:
        out += await _partial(store, instrument, last, tail, end, version)
    return out


async def _partial(
    store: Store, instrument: str, bucket: int, start: float, end: float, version: Correction
) -> list[HistoryRow]:
    """Bucket `bucket` of the samples in ``[start, end)`` only: one grouped query."""
    rows = await store.history(instrument, start, end, end - start, (version.channel,))
    return [_mapped(row._replace(bucket=bucket), version) for row in rows if row.bucket == 0]


def _mapped(row: HistoryRow, version: Correction) -> HistoryRow:
    low, high = version.apply(float(row.minimum)), version.apply(float(row.maximum))
    return row._replace(
        minimum=min(low, high), maximum=max(low, high), mean=version.apply(float(row.mean))
    )


async def _corrected_one_by_one(
    store: Store,
    instrument: str,
    since: float,
    every: float,
    start: float,
    end: float,
    version: Correction,
) -> list[HistoryRow]:
    samples = await store.query_samples(instrument, start, end, limit=EXACT_SAMPLES + 1)
    buckets: dict[int, list[float]] = {}
    for sample in samples:
        raw = sample.values.get(version.channel)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            continue
        bucket = int((sample.ts - since) // every)
        buckets.setdefault(bucket, []).append(version.apply(float(raw)))
    return [
        HistoryRow(bucket, version.channel, len(v), min(v), max(v), math.fsum(v) / len(v))
        for bucket, v in buckets.items()
    ]


def with_corrections(
    history: History, rows: Sequence[HistoryRow], versions: Sequence[Correction]
) -> History:
    """`history` with its corrected series (parallel to `t`) and the spans of `versions`."""
    position = {
        round((t - history.since) / history.every): index for index, t in enumerate(history.t)
    }
    size = len(history.t)
    merged: dict[str, dict[int, tuple[int, float, float, float]]] = {}
    for row in rows:
        index = position.get(row.bucket)
        if index is None:
            continue  # cannot happen: a corrected sample is a raw sample of its bucket
        column = merged.setdefault(row.channel, {})
        n, low, high, total = column.get(index, (0, math.inf, -math.inf, 0.0))
        column[index] = (
            n + row.samples,
            min(low, row.minimum),
            max(high, row.maximum),
            total + row.mean * row.samples,
        )
    corrected: dict[str, ChannelSeries] = {}
    for channel, column in merged.items():
        series = ChannelSeries(
            count=[0] * size, min=[None] * size, max=[None] * size, mean=[None] * size
        )
        for index, (n, low, high, total) in column.items():
            series.count[index] = n
            series.min[index] = low
            series.max[index] = high
            series.mean[index] = total / n
        corrected[channel] = series
    spans = [
        CorrectionSpan(
            calibration=v.calibration,
            channel=v.channel,
            since=max(history.since, v.valid_from),
            until=history.until if v.withdrawn_at is None else min(history.until, v.withdrawn_at),
        )
        for v in versions
    ]
    return History(
        instrument=history.instrument,
        since=history.since,
        until=history.until,
        every=history.every,
        channels=history.channels,
        t=history.t,
        series=history.series,
        corrected=corrected,
        calibrations=spans,
    )
