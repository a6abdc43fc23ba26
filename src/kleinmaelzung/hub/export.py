"""``GET /api/export``: instruments' logged samples, streamed as CSV or NDJSON.

Parameters (all optional)::

    instrument=ID or GLOB (default *)   since=T (default: the beginning)   until=T (default: now)
    channel=NAME (repeated or comma-separated)   format=csv|ndjson (default csv)

The answer is streamed from the database a chunk at a time (one snapshot of
the log per instrument), so its size is bounded by nothing but the range,
and the hub's memory by a chunk; a reader that is behind slows the reading
down. Instruments are the known ones that match and that the caller may
watch, in id order, each oldest sample first. ``X-Kmz-Rows-Expected`` tells
how many rows to expect (counted at the start: a progress bar's total).

CSV opens in a spreadsheet as it is: UTF-8 with a byte-order mark, a header
row, ``time (UTC)`` as ``2026-11-01 03:12:00.250``, then ``instrument``, then
one column per channel the instruments declare, its unit in the header
(``temperature [°C]``); flags are ``true``/``false``, a channel without a
value in a row is empty.

Corrected values: a channel that an approved calibration corrected at some
time of the range (`Corrections.overlapping`) gets two more columns after
its own, ``mass corrected [g]`` and ``mass calibration`` (the certificate
number and revision), named in the ``X-Kmz-Corrected-Channels`` header.
They are filled by the rule the live stream and a resumed subscription
follow (`Corrections.corrected_sample`: the version in force at the
sample's own time), on a snapshot of the versions taken when the export
starts, so a row says what a subscriber saw; empty where no calibration was
in force. Computed when read, like history's (`history_corrections`): the
log keeps raw samples only.

NDJSON: one sample per line, ``{"instrument": ..., "ts": ..., "run": ...,
"seq": ..., "values": {...}}``, ``ts`` in UNIX seconds (the instrument's
time), values as the agent sent them; where a calibration was in force, also
``"corrected": {...}`` and ``"calibration": ...`` as in a live sample.

At most `MAX_EXPORTS` run at once; another is refused with 429
``too_many_pending``. If reading the log fails midway, the connection is cut without the stream's
end, so a reader never takes a partial export for a whole one.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from datetime import UTC, datetime

import msgspec
from aiohttp import web

from ..calibration import Correction
from ..protocol import ErrorCode, Sample, Value, matches
from ..protocol.export import CORRECTED_HEADER, export_columns, export_headers
from .auth.web import principal_of
from .corrections import Corrections
from .params import BadParameter, channel_params, choice_param, pattern_param, problem, time_param
from .services import HUB_KEY
from .store.queries import ExportRow

_log = logging.getLogger(__name__)

#: Rows read from the database (and formatted in a worker thread) at a time.
CHUNK_ROWS = 2000
#: The header that tells how many rows to expect.
ROWS_HEADER = "X-Kmz-Rows-Expected"
#: Exports at once: each holds a database connection for as long as it
#: streams, and PostgreSQL's read pool (4) also serves the hub's own lookups.
MAX_EXPORTS = 2
#: The app's count of exports in progress (`install`).
EXPORTS_KEY = web.AppKey("kmz_exports", asyncio.Semaphore)


def install(app: web.Application) -> None:
    """Add ``GET /api/export`` to the app, with its limit of exports at once."""
    app[EXPORTS_KEY] = asyncio.Semaphore(MAX_EXPORTS)
    app.router.add_get("/api/export", export)


_values_decoder = msgspec.json.Decoder(dict[str, Value])
_encoder = msgspec.json.Encoder()


def csv_time(ts: float) -> str:
    """A UNIX time as a spreadsheet reads it: ``2026-11-01 03:12:00.250`` (UTC)."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _cell(value: Value | None) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def format_csv(
    instrument: str,
    rows: list[ExportRow],
    names: list[str],
    corrections: Corrections | None = None,
    calibrated: frozenset[str] = frozenset(),
) -> bytes:
    """CSV lines of one chunk of samples; `calibrated` channels with their two more cells."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if not calibrated:
        for row in rows:
            values = _values_decoder.decode(row.values)
            writer.writerow(
                [csv_time(row.ts), instrument, *(_cell(values.get(name)) for name in names)]
            )
        return out.getvalue().encode()
    for row in rows:
        values = _values_decoder.decode(row.values)
        sample = _corrected(instrument, row, values, corrections)
        cells: list[object] = [csv_time(row.ts), instrument]
        for name in names:
            cells.append(_cell(values.get(name)))
            if name in calibrated:
                fixed = sample.corrected.get(name)
                cells += ["", ""] if fixed is None else [fixed, sample.calibration]
        writer.writerow(cells)
    return out.getvalue().encode()


def _corrected(
    instrument: str, row: ExportRow, values: dict[str, Value], corrections: Corrections | None
) -> Sample:
    """The row as the live stream sent it: corrected by the version in force at its time."""
    sample = Sample(instrument=instrument, seq=row.seq, ts=row.ts, values=values)
    return sample if corrections is None else corrections.corrected_sample(sample)


def format_ndjson(
    instrument: str, rows: list[ExportRow], corrections: Corrections | None = None
) -> bytes:
    """NDJSON lines of one chunk of samples, with corrected values where a calibration applied."""
    name = _encoder.encode(instrument).decode()
    lines = []
    for row in rows:
        extra = ""
        if corrections is not None:
            sample = _corrected(instrument, row, _values_decoder.decode(row.values), corrections)
            if sample.calibration is not None:
                extra = (
                    f',"corrected":{_encoder.encode(sample.corrected).decode()},'
                    f'"calibration":{_encoder.encode(sample.calibration).decode()}'
                )
        lines.append(
            f'{{"instrument":{name},"ts":{row.ts!r},"run":{_encoder.encode(row.run).decode()},'
            f'"seq":{row.seq},"values":{row.values}{extra}}}\n'
        )
    return "".join(lines).encode()


def snapshot(versions: list[Correction]) -> Corrections | None:
    """The versions of one instrument's correction as the export applies them, if any."""
    if not versions:
        return None
    corrections = Corrections()  # a copy of the hub's, read in a worker thread
    corrections.load(versions)
    return corrections


async def export(request: web.Request) -> web.StreamResponse:
    """`GET /api/export`: samples of the matching instruments, streamed."""
    hub = request.app[HUB_KEY]
    params = request.query
    now = hub.clock()
    try:
        pattern = pattern_param(params, "instrument") or "*"
        since = time_param(params, "since", now=now)
        until = time_param(params, "until", now=now)
        wanted = channel_params(params)
        output = choice_param(params, "format", ("csv", "ndjson"))
    except BadParameter as exc:
        return problem(exc)
    since = 0.0 if since is None else since
    until = now if until is None else until
    principal = principal_of(request)
    if not principal.may_subscribe(pattern):
        return problem(
            BadParameter(f"{principal.name} may not export {pattern!r}", "forbidden"), status=403
        )
    exports = request.app[EXPORTS_KEY]
    if exports.locked():
        return problem(
            BadParameter(
                f"{MAX_EXPORTS} exports are running: try again when one has finished",
                ErrorCode.TOO_MANY_PENDING,
            ),
            status=429,
        )
    async with exports:
        return await _export(request, pattern, since, until, wanted, output)


async def _export(
    request: web.Request,
    pattern: str,
    since: float,
    until: float,
    wanted: tuple[str, ...],
    output: str,
) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    principal = principal_of(request)
    records = [
        r for r in hub.registry.records() if matches(pattern, r.id) and principal.may_watch(r.id)
    ]
    columns = export_columns(records, wanted)
    names = [c.name for c in columns]
    # Snapshots of the versions now: one approved or withdrawn while the
    # export streams starts or ends after `until`, so it changes no row.
    versions = {
        r.id: [v for v in hub.corrections.overlapping(r.id, since, until) if v.channel in names]
        for r in records
    }
    used = {v.channel for vs in versions.values() for v in vs}
    calibrated = frozenset(name for name in names if name in used)
    expected = 0
    for record in records:
        expected += await hub.store.count_samples(record.id, since, until)
    suffix = "csv" if output == "csv" else "ndjson"
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8"
            if output == "csv"
            else "application/x-ndjson",
            "Content-Disposition": f'attachment; filename="kmz-export.{suffix}"',
            ROWS_HEADER: str(expected),
            CORRECTED_HEADER: ",".join(name for name in names if name in calibrated),
        }
    )
    await response.prepare(request)
    if output == "csv":
        header = io.StringIO()
        csv.writer(header, lineterminator="\r\n").writerow(export_headers(columns, calibrated))
        await response.write(b"\xef\xbb\xbf" + header.getvalue().encode())
    rows = 0
    for record in records:
        corrections = snapshot(versions[record.id])
        async for chunk in hub.store.stream_samples(record.id, since, until, chunk_rows=CHUNK_ROWS):
            # Formatted off the loop: a chunk takes a few ms of Python.
            if output == "csv":
                data = await asyncio.to_thread(
                    format_csv, record.id, chunk, names, corrections, calibrated
                )
            else:
                data = await asyncio.to_thread(format_ndjson, record.id, chunk, corrections)
            await response.write(data)
            rows += len(chunk)
    await response.write_eof()
    _log.info(
        "exported",
        extra={"pattern": pattern, "rows": rows, "format": output, "peer": principal.name},
    )
    return response
