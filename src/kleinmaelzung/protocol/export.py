"""The columns of an export (``GET /api/export``, `kmz export`): one rule for CSV and Parquet.

A row is a sample: ``time (UTC)``, ``instrument``, then one column per
channel the exported instruments declare, in the order they first declare
them, named with the unit in brackets (``temperature [°C]``). The hub writes
CSV by it, the client Parquet, so both files have the same columns.
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
