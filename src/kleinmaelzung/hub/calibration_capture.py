"""Readings captured from the hub's own log, never from what a client says it saw.

The client asks for the next reading of a point; the hub commits what it
has accepted, reads the instrument's newest samples, checks the procedure's
stability criterion on them (or the instrument's own stable flag) and keeps
them with the reading. Environmental conditions whose procedure names a
source (``germ-chamber.temperature``) are read the same way at each capture.
"""

from __future__ import annotations

from collections.abc import Callable

from ..calibration import (
    CalibrationError,
    CalibrationRecord,
    EnvironmentRecord,
    RawSample,
    Reading,
    is_stable,
    set_environment,
)
from ..calibration.stability import spread
from .store import Store, StoreError

#: How far back a capture looks for the instrument's samples (its clock).
CAPTURE_LOOKBACK_S = 30.0
#: A capture's newest sample may be at most this old (hub clock against the
#: agent's: within the hub's clock warning bound of 1 s, plus the poll).
CAPTURE_FRESH_S = 10.0
#: Samples kept behind a reading at least (the stability window, if longer).
RAW_KEPT = 5


class NotStable(CalibrationError):
    """The instrument's newest samples do not meet the stability criterion."""

    code = "not_stable"


class NoReading(CalibrationError):
    """There is no fresh sample of the instrument's channel to capture."""

    code = "no_reading"


async def recent_samples(
    store: Store,
    clock: Callable[[], float],
    instrument_id: str,
    channel: str,
    flag: str | None,
) -> list[RawSample]:
    """The instrument's newest samples of `channel` in the log (committed first), oldest first."""
    try:
        await store.flush()
        now = clock()
        rows = await store.query_samples(
            instrument_id, now - CAPTURE_LOOKBACK_S, now + CAPTURE_LOOKBACK_S
        )
    except StoreError as exc:
        raise NoReading(f"cannot read {instrument_id}'s samples from the log: {exc}") from None
    samples = []
    for row in rows:
        value = row.values.get(channel)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        stable = row.values.get(flag) if flag else None
        samples.append(
            RawSample(
                ts=row.ts,
                value=float(value),
                stable=stable if isinstance(stable, bool) else None,
            )
        )
    if not samples or now - samples[-1].ts > CAPTURE_FRESH_S:
        raise NoReading(
            f"no sample of {instrument_id}.{channel} in the last {CAPTURE_FRESH_S:g} s: "
            "is the instrument online?"
        )
    return samples


def accept_reading(
    record: CalibrationRecord, samples: list[RawSample], after: float | None
) -> Reading:
    """The newest sample as a reading with the samples behind it, if the criterion holds.

    `after`: the time of the point's previous reading; a reading needs a newer sample.
    """
    criterion = record.procedure.stability
    keep = max(RAW_KEPT, criterion.window or 0)
    if not samples:
        raise NotStable("no sample since the load was applied yet; capture again in a moment")
    newest = samples[-1]
    if after is not None and newest.ts <= after:
        raise NotStable(
            "no new sample since the last reading of this point; capture again in a moment"
        )
    if not is_stable(samples, criterion):
        if criterion.flag is not None:
            why = f"the instrument does not report {criterion.flag!r}"
        else:
            width = spread(samples, criterion.window or 1)
            why = (
                f"spread {width:g} {record.procedure.unit} over the last "
                f"{criterion.window} samples, more than {criterion.max_spread:g}"
                if width is not None
                else f"fewer than {criterion.window} samples yet"
            )
        raise NotStable(f"{record.instrument.id} is not stable: {why}")
    return Reading(value=newest.value, ts=newest.ts, raw=tuple(samples[-keep:]))


async def with_live_environment(
    store: Store, clock: Callable[[], float], record: CalibrationRecord
) -> CalibrationRecord:
    """Widen each live condition's min and max by its source's newest sample."""
    for condition in record.procedure.environment:
        if not condition.source or "." not in condition.source:
            continue
        instrument_id, _, channel = condition.source.rpartition(".")
        try:
            samples = await recent_samples(store, clock, instrument_id, channel, None)
        except NoReading:
            continue  # entered by hand later (signing asks for it)
        value = samples[-1].value
        known = next((e for e in record.environment if e.name == condition.name), None)
        low = value if known is None else min(known.minimum, value)
        high = value if known is None else max(known.maximum, value)
        record = set_environment(
            record,
            EnvironmentRecord(
                name=condition.name,
                unit=condition.unit,
                minimum=low,
                maximum=high,
                source=condition.source,
            ),
        )
    return record
