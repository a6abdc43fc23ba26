"""Replay: logged samples published through the hub again, as a replay agent, at any speed.

The replay agent announces each replayed instrument under a namespaced id
(``replay.kiln-air`` for ``kiln-air``), without its commands, so nobody
takes it for the live instrument or drives it. Samples keep their values and
their spacing divided by `speed`; their times are shifted so that the
replay looks live (a dashboard's plot of the last minutes shows it): the
first replayed sample is dated when the replay starts.

Samples are read from the hub's export (``GET /api/export``, NDJSON), one
window of `WINDOW_S` logged seconds at a time, each instrument in turn, then
merged by time: memory holds one window, whatever the range.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import msgspec

from .. import __version__
from ..protocol import (
    PROTOCOL_VERSION,
    AgentHello,
    Data,
    HubToAgentMessage,
    InstrumentInfo,
    InstrumentRecord,
    Sample,
    Value,
    is_instrument_id,
    matches,
)
from ..transport import AGENT_PATH, Connector, Trust, base_url, websocket_url
from .http import request
from .stream import lines, streamed_get

#: The prefix of replayed instruments' ids: ``replay.kiln-air``.
REPLAY_PREFIX = "replay."
#: Logged seconds read from the hub at a time.
WINDOW_S = 600.0
#: Samples due within this much of each other go in one frame.
FRAME_S = 0.005


class _Row(msgspec.Struct):
    instrument: str
    ts: float
    seq: int
    values: dict[str, Value]
    run: str | None = None


_row_decoder = msgspec.json.Decoder(_Row)
_records_decoder = msgspec.json.Decoder(list[InstrumentRecord])


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay published."""

    #: Samples sent, per replayed id.
    samples: dict[str, int]
    #: Replayed id by original id.
    ids: dict[str, str]


def replay_id(instrument: str, prefix: str = REPLAY_PREFIX) -> str:
    """The id a replayed instrument is announced under; ValueError if it would not be an id."""
    replayed = prefix + instrument
    if not is_instrument_id(replayed):
        raise ValueError(f"{instrument!r} cannot be replayed as {replayed!r}: not an instrument id")
    return replayed


async def replay(
    url: str,
    *,
    since: float,
    until: float,
    instrument: str = "*",
    speed: float = 1.0,
    prefix: str = REPLAY_PREFIX,
    agent_id: str = "replay",
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
    on_sample: Callable[[Sample], None] | None = None,
) -> ReplayResult:
    """Publish the samples logged with ``since <= ts < until`` of instruments matching
    `instrument`, `speed` times as fast as they were taken; return once all are sent.

    `token`: an agent token that may serve the replayed ids (``replay.*``) on a
    hub that asks for one.
    """
    if speed <= 0:
        raise ValueError(f"speed must be above 0, got {speed}")
    records = await _instruments(url, instrument, token, ca_file, pin_sha256)
    ids = {r.id: replay_id(r.id, prefix) for r in records}
    infos = [
        InstrumentInfo(
            id=ids[r.id],
            kind=r.kind,
            description=f"replay of {r.id}" + (f": {r.description}" if r.description else ""),
            channels=r.channels,
        )
        for r in records
    ]
    hello = AgentHello(
        protocol=PROTOCOL_VERSION,
        agent_id=agent_id,
        instruments=infos,
        token=token,
        software=f"kleinmaelzung/{__version__} replay",
        run=secrets.token_hex(8),
    )
    sent: dict[str, int] = dict.fromkeys(ids.values(), 0)
    trust = Trust.for_client(ca_file, pin_sha256)
    connector: Connector[HubToAgentMessage] = Connector(
        websocket_url(url, AGENT_PATH), hello, trust=trust
    )
    async with connector:
        connection = await connector.connect()
        drain = asyncio.create_task(_drain(connection))
        try:
            started: float | None = None  # monotonic time of the first sample
            wall_start = time.time()
            first_ts: float | None = None
            async for batch in _merged(url, records, since, until, token, ca_file, pin_sha256):
                if first_ts is None:
                    first_ts, started = batch[0].ts, time.monotonic()
                assert started is not None
                due = started + (batch[0].ts - first_ts) / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # the replay's pacing
                samples = []
                for row in batch:
                    replayed = ids[row.instrument]
                    sample = Sample(
                        instrument=replayed,
                        seq=sent[replayed],
                        ts=wall_start + (row.ts - first_ts) / speed,
                        values=row.values,
                    )
                    sent[replayed] += 1
                    samples.append(sample)
                    if on_sample is not None:
                        on_sample(sample)
                await connection.send(Data(samples=samples))
        finally:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
            await connection.close()
    return ReplayResult(samples=sent, ids=ids)


async def _drain(connection: AsyncIterator[object]) -> None:
    # Acks and anything else the hub sends: read, so that its queue to us
    # never fills; a replay keeps nothing to resend.
    async for _ in connection:
        pass


async def _instruments(
    url: str,
    pattern: str,
    token: str | None,
    ca_file: str | os.PathLike[str] | None,
    pin_sha256: str | None,
) -> list[InstrumentRecord]:
    body = await request(
        "GET",
        base_url(url) + "/api/instruments",
        token=token,
        ca_file=ca_file,
        pin_sha256=pin_sha256,
    )
    records = _records_decoder.decode(body)
    # Replays of replays are left out unless asked for by name.
    replays = pattern.startswith(REPLAY_PREFIX)
    return [
        r
        for r in records
        if matches(pattern, r.id) and (replays or not r.id.startswith(REPLAY_PREFIX))
    ]


async def _merged(
    url: str,
    records: list[InstrumentRecord],
    since: float,
    until: float,
    token: str | None,
    ca_file: str | os.PathLike[str] | None,
    pin_sha256: str | None,
) -> AsyncIterator[list[_Row]]:
    """The samples of every instrument, oldest first, in groups due together."""
    endpoint = base_url(url) + "/api/export"
    start = since
    while start < until:
        end = min(until, start + WINDOW_S)
        rows: list[_Row] = []
        for record in records:
            params = {
                "instrument": record.id,
                "since": repr(start),
                "until": repr(end),
                "format": "ndjson",
            }
            async with streamed_get(
                endpoint, params, token=token, ca_file=ca_file, pin_sha256=pin_sha256
            ) as response:
                async for line in lines(response):
                    if line:
                        rows.append(_row_decoder.decode(line))
        rows.sort(key=lambda r: r.ts)
        group: list[_Row] = []
        for row in rows:
            if group and row.ts - group[0].ts > FRAME_S:
                yield group
                group = []
            group.append(row)
        if group:
            yield group
        start = end
