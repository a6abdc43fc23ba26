"""The columns of an export (``GET /api/export``, `kmz export`): one rule for CSV and Parquet.

A row is a sample: ``time (UTC)``, ``instrument``, then one column per
channel the exported instruments declare, in the order they first declare
them, named with the unit in brackets (``temperature [°C]``). The hub writes
CSV by it, the client Parquet, so both files have the same columns.

A channel that an approved calibration corrected within the range (the hub
names them in the ``X-Kmz-Corrected-Channels`` header) has two more columns
right after its own: the corrected value (``mass corrected [g]``) and the
calibration that produced it (``mass calibration``), both empty in rows no
calibration was in force for.
"""

from __future__ import annotations

from collections.abc import Iterable

from .messages import Channel, InstrumentRecord

TIME_COLUMN = "time (UTC)"
INSTRUMENT_COLUMN = "instrument"


def column_name(channel: Channel) -> str:
    """A channel's column: its name, and its unit in brackets if it has one."""
    return f"{channel.name} [{channel.unit}]" if channel.unit else channel.name


def export_columns(
    records: Iterable[InstrumentRecord], wanted: Iterable[str] = ()
) -> list[Channel]:
    """The channels the instruments declare (those `wanted`, if any), first declared first."""
    wanted = tuple(wanted)
    columns: dict[str, Channel] = {}
    for record in records:
        for channel in record.channels:
            if channel.name not in columns and (not wanted or channel.name in wanted):
                columns[channel.name] = channel
    if wanted:
        return [columns.get(name, Channel(name=name)) for name in wanted]
    return list(columns.values())


#: The export's header naming the calibrated channels (comma-separated, in column order).
CORRECTED_HEADER = "X-Kmz-Corrected-Channels"


def corrected_column_name(channel: Channel) -> str:
    """A calibrated channel's corrected column: ``mass corrected [g]``."""
    name = f"{channel.name} corrected"
    return f"{name} [{channel.unit}]" if channel.unit else name


def calibration_column_name(channel: Channel) -> str:
    """A calibrated channel's calibration column: ``mass calibration``."""
    return f"{channel.name} calibration"


def export_headers(columns: Iterable[Channel], corrected: Iterable[str] = ()) -> list[str]:
    """The header row: time, instrument, each channel and, after a calibrated one, its two."""
    calibrated = set(corrected)
    headers = [TIME_COLUMN, INSTRUMENT_COLUMN]
    for channel in columns:
        headers.append(column_name(channel))
        if channel.name in calibrated:
            headers += [corrected_column_name(channel), calibration_column_name(channel)]
    return headers
