"""The SQLite traffic log's schema, and the migration of files written by older hubs.

Versions (``PRAGMA user_version``):

1 (stored as 0)  ``traffic`` without ``delivered_to``: every delivery was its own row.
2  ``traffic.delivered_to``: inbound data names its recipients on its own row.
3  ``instrument_seq``: the newest logged seq per instrument and agent run.
4  ``known_instrument``: the instruments the hub has seen, kept across restarts;
   seeded from the ``agent_hello`` rows already in the log.
5  ``sample``: every logged sample as a row, indexed by instrument and time;
   filled from the ``data`` rows already in the log (their run unknown).
6  ``instrument_seq`` keyed by run and instrument: an agent sends samples of
   earlier runs (its spool's backlog) beside its current run's.
7  ``writer_position``: how far a writer process got in the hub's stream,
   committed with its rows, so that a writer restarted after a crash writes
   nothing twice.
8  ``traffic_ts``: the log read by time range (``kmz log --since``) by index.
9  ``instrument_seq.updated`` and ``writer_position.committed_at`` (UNIX
   seconds of the last write): retention prunes the runs and writers no one
   needs any more (`retention`). New files vacuum incrementally.
10 ``sample_minute`` (+ ``_pending``, ``_state``): per-minute summaries that
   history reads (`summaries`), built by a background task from the samples;
   older logs are rolled up by that task too, not by this migration.
"""

from __future__ import annotations

import logging
import sqlite3

import msgspec

from ...protocol import InstrumentInfo
from .batch import sample_rows

_log = logging.getLogger(__name__)

#: Bumped with every schema change; `migrate` brings older files up to date.
SCHEMA_VERSION = 10

SCHEMA = """
CREATE TABLE IF NOT EXISTS traffic (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    peer TEXT NOT NULL,
    instrument TEXT,
    type TEXT NOT NULL,
    message TEXT NOT NULL,
    delivered_to TEXT
);
CREATE INDEX IF NOT EXISTS traffic_instrument ON traffic (instrument, id);
-- Time ranges of the log (kmz log --since/--until); with the rowid, (ts, id).
CREATE INDEX IF NOT EXISTS traffic_ts ON traffic (ts);
-- The newest logged seq per agent run and instrument, committed with the
-- rows: samples an agent sends again after a hub restart are not logged twice.
CREATE TABLE IF NOT EXISTS instrument_seq (
    run TEXT NOT NULL,
    instrument TEXT NOT NULL,
    seq INTEGER NOT NULL,
    updated REAL NOT NULL DEFAULT 0,  -- UNIX seconds of its last write (retention)
    PRIMARY KEY (run, instrument)
);
-- Every instrument the hub has seen, so that after a restart it can list
-- those whose agent is down as offline rather than not at all.
CREATE TABLE IF NOT EXISTS known_instrument (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    info TEXT NOT NULL,  -- InstrumentInfo as JSON, as the agent announced it
    last_seen REAL       -- hub time of its newest reading; NULL if none yet
);
-- Every logged sample, beside the data message it came in (the traffic row
-- of its instrument with ts = received), for time-range queries.
CREATE TABLE IF NOT EXISTS sample (
    instrument TEXT NOT NULL,
    run TEXT,                -- the agent's run; NULL if logged before version 5
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,        -- agent time of the reading
    received REAL NOT NULL,  -- hub time it arrived
    channel_values TEXT NOT NULL  -- JSON object, channel -> value, as the agent sent it
);
CREATE INDEX IF NOT EXISTS sample_instrument_ts ON sample (instrument, ts);
-- How far each writer process (one per hub start) got in its hub's stream.
CREATE TABLE IF NOT EXISTS writer_position (
    writer TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    committed_at REAL NOT NULL DEFAULT 0  -- UNIX seconds of its last commit (retention)
);
-- Per instrument, minute (floor(ts / 60)) and numeric channel: what history
-- merges exactly (`summaries`). Written by the roll-up task, never the writer.
CREATE TABLE IF NOT EXISTS sample_minute (
    instrument TEXT NOT NULL,
    minute INTEGER NOT NULL,
    channel TEXT NOT NULL,
    samples INTEGER NOT NULL,
    minimum REAL NOT NULL,
    maximum REAL NOT NULL,
    total REAL NOT NULL,
    PRIMARY KEY (instrument, minute, channel)
) WITHOUT ROWID;
-- Minutes [first, end) whose summaries are missing or stale.
CREATE TABLE IF NOT EXISTS sample_minute_pending (
    instrument TEXT NOT NULL,
    first_minute INTEGER NOT NULL,
    end_minute INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sample_minute_pending_instrument
    ON sample_minute_pending (instrument);
-- The roll-up's watermark (sample rowid) and retention horizon (a minute).
CREATE TABLE IF NOT EXISTS sample_minute_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    watermark INTEGER NOT NULL,
    horizon INTEGER
);
"""

INSERT_TRAFFIC = (
    "INSERT INTO traffic (ts, direction, peer, instrument, type, message, delivered_to)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
UPSERT_SEQ = """
INSERT INTO instrument_seq (run, instrument, seq, updated) VALUES (?, ?, ?, unixepoch())
ON CONFLICT (run, instrument) DO UPDATE SET seq = max(seq, excluded.seq), updated = excluded.updated
"""
# A save without a time keeps the stored one: announcing is not a reading.
UPSERT_INSTRUMENT = """
INSERT INTO known_instrument (id, agent, info, last_seen) VALUES (?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET agent = excluded.agent, info = excluded.info,
    last_seen = coalesce(excluded.last_seen, known_instrument.last_seen)
"""
INSERT_SAMPLE = (
    "INSERT INTO sample (instrument, run, seq, ts, received, channel_values)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
SELECT_SAMPLES = (
    "SELECT instrument, run, seq, ts, received, channel_values FROM sample"
    " WHERE instrument = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?"
)
# Downsampled history (`queries.HistoryRow`): grouped by the database, so a
# month of 1 Hz samples leaves it as a thousand rows, not millions.
HISTORY_CHANNELS = """
SELECT CAST((s.ts - :start) / :every AS INTEGER) AS bucket, j.key,
    count(*), min(j.value), max(j.value), avg(j.value)
FROM sample AS s, json_each(s.channel_values) AS j
WHERE s.instrument = :instrument AND s.ts >= :start AND s.ts < :end
    AND j.type IN ('integer', 'real') /* channels */
GROUP BY bucket, j.key
"""
HISTORY_ONE_CHANNEL = """
SELECT bucket, :channel, count(*), min(v), max(v), avg(v) FROM (
    SELECT CAST((ts - :start) / :every AS INTEGER) AS bucket,
        json_extract(channel_values, :path) AS v
    FROM sample WHERE instrument = :instrument AND ts >= :start AND ts < :end
        AND json_type(channel_values, :path) IN ('integer', 'real')
) GROUP BY bucket
"""
COUNT_SAMPLES = "SELECT count(*) FROM sample WHERE instrument = ? AND ts >= ? AND ts < ?"
EXPORT_SAMPLES = (
    "SELECT ts, run, seq, channel_values FROM sample"
    " WHERE instrument = ? AND ts >= ? AND ts < ? ORDER BY ts"
)
UPSERT_POSITION = """
INSERT INTO writer_position (writer, position, committed_at) VALUES (?, ?, unixepoch())
ON CONFLICT (writer) DO UPDATE SET position = max(position, excluded.position),
    committed_at = excluded.committed_at
"""
SELECT_POSITION = "SELECT position FROM writer_position WHERE writer = ?"
DELETE_INSTRUMENT = "DELETE FROM known_instrument WHERE id = ?"
SELECT_INSTRUMENTS = "SELECT id, agent, info, last_seen FROM known_instrument ORDER BY id"
# Walks the traffic_instrument index backwards from the newest row of the
# instrument: a data row is usually among the first few.
NEWEST_READING = (
    "SELECT ts FROM traffic WHERE instrument = ? AND direction = 'in' AND type = 'data'"
    " ORDER BY id DESC LIMIT 1"
)


def create(connection: sqlite3.Connection) -> None:
    """Create what is missing and bring an older file up to SCHEMA_VERSION."""
    connection.executescript(SCHEMA)
    migrate(connection)


def migrate(connection: sqlite3.Connection) -> None:
    """Bring a traffic log written by an older hub up to SCHEMA_VERSION.

    Tables new in a version are made by `SCHEMA` (``IF NOT EXISTS``); this adds
    columns and fills new tables from what the log already holds.
    """
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version >= SCHEMA_VERSION:
        return
    columns = {row[1] for row in connection.execute("PRAGMA table_info(traffic)")}
    connection.execute("BEGIN")
    try:
        if "delivered_to" not in columns:  # version 1 logged every delivery as its own row
            connection.execute("ALTER TABLE traffic ADD COLUMN delivered_to TEXT")
        if version < 4:
            _remember_announced_instruments(connection)
        if version < 5:
            _fill_sample_table(connection)
        if version < 6:
            _key_seqs_by_run(connection)
        if version < 9:
            _time_bookkeeping(connection)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


class _Hello(msgspec.Struct):
    """The part of a logged agent_hello that names instruments; lenient on purpose."""

    agent_id: str
    instruments: list[msgspec.Raw] = []


_hello_decoder = msgspec.json.Decoder(_Hello)
_info_decoder = msgspec.json.Decoder(InstrumentInfo)


def _remember_announced_instruments(connection: sqlite3.Connection) -> None:
    # One pass over the log's hellos, oldest first, so the newest announcement
    # of each instrument wins. It reads the whole table once (no index on
    # type): a one-time cost of the upgrade to version 4.
    remembered = 0
    hellos = connection.execute(
        "SELECT message FROM traffic WHERE direction = 'in' AND type = 'agent_hello' ORDER BY id"
    )
    for (message,) in hellos:
        try:
            hello = _hello_decoder.decode(message)
        except msgspec.DecodeError:
            continue
        for raw in hello.instruments:
            try:
                info = _info_decoder.decode(raw)
            except msgspec.DecodeError:
                continue  # announced under another protocol version
            connection.execute(
                UPSERT_INSTRUMENT, (info.id, hello.agent_id, bytes(raw).decode(), None)
            )
            remembered += 1
    if remembered:
        _log.info("traffic log upgraded", extra={"announcements": remembered})


def _fill_sample_table(connection: sqlite3.Connection) -> None:
    # One pass over the logged data, in chunks so that a big log is not read
    # into memory at once; a one-time cost of the upgrade to version 5.
    filled = 0
    rows = connection.execute(
        "SELECT ts, message FROM traffic WHERE direction = 'in' AND type = 'data' ORDER BY id"
    )
    while chunk := rows.fetchmany(10_000):
        samples = []
        for received, message in chunk:
            try:
                samples += sample_rows(message, received, None)
            except msgspec.DecodeError:
                continue  # logged under another protocol version
        # A second cursor: `rows` is still being read.
        connection.cursor().executemany(INSERT_SAMPLE, samples)
        filled += len(samples)
    if filled:
        _log.info("traffic log upgraded", extra={"samples": filled})


def _key_seqs_by_run(connection: sqlite3.Connection) -> None:
    # Versions 3 to 5 kept one run per instrument (its newest): copied over.
    keys = [row[1] for row in connection.execute("PRAGMA table_info(instrument_seq)") if row[5]]
    if keys == ["run", "instrument"]:
        return  # made by this version's SCHEMA
    connection.execute(
        "CREATE TABLE instrument_seq_by_run (run TEXT NOT NULL, instrument TEXT NOT NULL,"
        " seq INTEGER NOT NULL, PRIMARY KEY (run, instrument))"
    )
    connection.execute(
        "INSERT INTO instrument_seq_by_run SELECT run, instrument, seq FROM instrument_seq"
    )
    connection.execute("DROP TABLE instrument_seq")
    connection.execute("ALTER TABLE instrument_seq_by_run RENAME TO instrument_seq")


def _time_bookkeeping(connection: sqlite3.Connection) -> None:
    # Rows from before version 9 count as written now: retention keeps them
    # for its grace period, as it would rows written today.
    for table, column in (("instrument_seq", "updated"), ("writer_position", "committed_at")):
        columns = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} REAL NOT NULL DEFAULT 0")
        connection.execute(f"UPDATE {table} SET {column} = unixepoch() WHERE {column} = 0")
