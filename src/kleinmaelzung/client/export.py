"""Exporting logged samples to a file (``GET /api/export``): CSV as the hub writes it, or Parquet.

Both are written as the hub streams them, so memory stays bounded whatever
the size: CSV is copied to the file as it arrives; for Parquet the client
reads the NDJSON stream and writes a row group every `PARQUET_ROWS` rows
(pyarrow, the ``data`` extra). The file appears under its name only once it
is complete: until then it is ``NAME.partial`` beside it, removed if the
export fails.

The columns are the same in both (`protocol.export`): ``time (UTC)``,
``instrument``, then one per channel with its unit (``temperature [°C]``),
and after each channel an approved calibration corrected within the range
(the hub names them in a header) its corrected value (``mass corrected
[g]``) and the calibration's id (``mass calibration``), empty in rows no
calibration was in force for.
In Parquet, time is a UTC timestamp in milliseconds (as the CSV shows it),
numbers are float64, flags bool, texts strings; a value of another type
than its column's first is left empty and counted in `ExportResult.mismatched`.
Corrected values are float64 and calibrations strings.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from ..protocol import Channel, InstrumentRecord, Value, matches
from ..protocol.export import (
    CORRECTED_HEADER,
    INSTRUMENT_COLUMN,
    TIME_COLUMN,
    calibration_column_name,
    column_name,
    corrected_column_name,
    export_columns,
)
from ..transport import base_url
from .history import MissingExtra, TimeLike, to_timestamp
from .http import decode_answer, request
from .stream import lines, streamed_get

#: Rows per Parquet row group: what the client holds at once.
PARQUET_ROWS = 50_000
#: Bytes copied to a CSV file at a time.
CSV_CHUNK_BYTES = 1 << 16

ExportFormat = Literal["csv", "parquet"]
#: Called as rows arrive: (rows so far, rows expected or None).
OnProgress = Callable[[int, int | None], None]


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote."""

    path: Path
    rows: int
    #: Values left empty in Parquet because their type was not their column's.
    mismatched: int = 0


class _Row(msgspec.Struct, frozen=True):
    instrument: str
    ts: float
    run: str | None
    seq: int
    values: dict[str, Value]
    corrected: dict[str, float] = {}
    calibration: str | None = None


_row_decoder = msgspec.json.Decoder(_Row)
_records_decoder = msgspec.json.Decoder(list[InstrumentRecord])


async def export(
    url: str,
    path: str | os.PathLike[str],
    *,
    instrument: str = "*",
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    channels: Iterable[str] = (),
    format: ExportFormat = "csv",
    on_progress: OnProgress | None = None,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
) -> ExportResult:
    """Write the samples of the instruments matching `instrument` to `path`."""
    target = Path(path)
    wanted = list(channels)
    params = {"instrument": instrument, "format": "csv" if format == "csv" else "ndjson"}
    if since is not None:
        params["since"] = repr(to_timestamp(since))
    if until is not None:
        params["until"] = repr(to_timestamp(until))
    if wanted:
        params["channel"] = ",".join(wanted)
    writer: Callable[..., Any]
    if format == "csv":
        writer = _write_csv
    elif format == "parquet":
        writer = _write_parquet
        _require_pyarrow()
    else:
        raise ValueError(f"format must be csv or parquet, got {format!r}")
    partial = target.with_name(target.name + ".partial")
    endpoint = base_url(url) + "/api/export"
    try:
        columns: list[Channel] = []
        if format == "parquet":
            columns = await _columns(url, instrument, wanted, token, ca_file, pin_sha256)
        async with streamed_get(
            endpoint, params, token=token, ca_file=ca_file, pin_sha256=pin_sha256
        ) as response:
            expected_text = response.headers.get("X-Kmz-Rows-Expected", "")
            expected = int(expected_text) if expected_text.isdigit() else None
            # A hub before corrected exports sends no such header: raw columns only.
            calibrated = frozenset(
                filter(None, response.headers.get(CORRECTED_HEADER, "").split(","))
            )
            result: ExportResult = await writer(
                response, partial, columns, calibrated, expected, on_progress
            )
        partial.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return ExportResult(target, result.rows, result.mismatched)


async def _columns(
    url: str,
    pattern: str,
    wanted: list[str],
    token: str | None,
    ca_file: str | os.PathLike[str] | None,
    pin_sha256: str | None,
) -> list[Channel]:
    """The export's channel columns, by the rule the hub's CSV follows."""
    endpoint = base_url(url) + "/api/instruments"
    body = await request("GET", endpoint, token=token, ca_file=ca_file, pin_sha256=pin_sha256)
    records = decode_answer(_records_decoder, body, endpoint)
    return export_columns(sorted((r for r in records if matches(pattern, r.id)), key=_id), wanted)


def _id(record: InstrumentRecord) -> str:
    return record.id


async def _write_csv(
    response: Any,
    partial: Path,
    columns: list[Channel],
    calibrated: frozenset[str],
    expected: int | None,
    on_progress: OnProgress | None,
) -> ExportResult:
    newlines = 0
    with partial.open("wb") as file:
        async for chunk in response.content.iter_chunked(CSV_CHUNK_BYTES):
            file.write(chunk)
            newlines += chunk.count(b"\n")
            if on_progress is not None:
                on_progress(max(newlines - 1, 0), expected)
    rows = max(newlines - 1, 0)  # the header
    return ExportResult(partial, rows)


def _require_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingExtra(
            "Parquet needs pyarrow: pip install 'kleinmaelzung[data]' (or export --format csv)"
        ) from None
    return pyarrow


def _ms(ts: float) -> datetime:
    """The time as the CSV shows it: UTC, to the millisecond (cut, not rounded)."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class _ParquetBatches:
    """Rows gathered column by column, written as a row group every `PARQUET_ROWS`."""

    def __init__(self, partial: Path, columns: list[Channel], calibrated: frozenset[str]) -> None:
        self.pa = _require_pyarrow()
        self.partial = partial
        self.columns = columns
        self.names = [c.name for c in columns]
        self.calibrated = [name for name in self.names if name in calibrated]
        self.units = {c.name: c.unit for c in columns}
        self.kinds: dict[str, type] = {}
        self.mismatched = 0
        self.rows = 0
        self.writer: Any = None
        self._reset()

    def _reset(self) -> None:
        self.times: list[datetime] = []
        self.instruments: list[str] = []
        self.values: dict[str, list[Value | None]] = {name: [] for name in self.names}
        self.corrected: dict[str, list[float | None]] = {name: [] for name in self.calibrated}
        self.calibrations: dict[str, list[str | None]] = {name: [] for name in self.calibrated}

    def add(self, row: _Row) -> None:
        self.times.append(_ms(row.ts))
        self.instruments.append(row.instrument)
        for name in self.names:
            value = row.values.get(name)
            if value is not None:
                kind = bool if isinstance(value, bool) else str if isinstance(value, str) else float
                expected = self.kinds.setdefault(name, kind)
                if kind is not expected:
                    self.mismatched += 1
                    value = None
                elif kind is float:
                    value = float(value)
            self.values[name].append(value)
        for name in self.calibrated:
            fixed = row.corrected.get(name)
            self.corrected[name].append(fixed)
            self.calibrations[name].append(None if fixed is None else row.calibration)
        if len(self.times) >= PARQUET_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.times and self.writer is not None:
            return
        pa = self.pa
        types = {bool: pa.bool_(), str: pa.string(), float: pa.float64()}
        if self.writer is None:
            fields = [
                pa.field(TIME_COLUMN, pa.timestamp("ms", tz="UTC")),
                pa.field(INSTRUMENT_COLUMN, pa.string()),
            ]
            for channel in self.columns:
                name = channel.name
                metadata = {"unit": channel.unit} if channel.unit else None
                kind = types[self.kinds.get(name, float)]
                fields.append(pa.field(column_name(channel), kind, metadata=metadata))
                if name in self.corrected:
                    fields += [
                        pa.field(corrected_column_name(channel), pa.float64(), metadata=metadata),
                        pa.field(calibration_column_name(channel), pa.string()),
                    ]
            self.schema = pa.schema(fields)
            for name in self.names:  # a column's type is fixed from here on
                self.kinds.setdefault(name, float)
            self.writer = pa.parquet.ParquetWriter(self.partial, self.schema)
        columns: list[list[Any]] = [self.times, self.instruments]
        for name in self.names:
            columns.append(self.values[name])
            if name in self.corrected:
                columns += [self.corrected[name], self.calibrations[name]]
        arrays = [
            pa.array(column, type=field.type)
            for column, field in zip(columns, self.schema, strict=True)
        ]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.rows += len(self.times)
        self._reset()

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


async def _write_parquet(
    response: Any,
    partial: Path,
    columns: list[Channel],
    calibrated: frozenset[str],
    expected: int | None,
    on_progress: OnProgress | None,
) -> ExportResult:
    batches = _ParquetBatches(partial, columns, calibrated)
    count = 0
    try:
        async for line in lines(response):
            if not line:
                continue
            batches.add(_row_decoder.decode(line))
            count += 1
            if on_progress is not None and count % 1000 == 0:
                on_progress(count, expected)
    finally:
        batches.close()
    if on_progress is not None:
        on_progress(count, expected)
    return ExportResult(partial, batches.rows, batches.mismatched)
