"""Choosing a traffic-log backend, and what each keeps: the sample table, PostgreSQL's schema.

Tests taking `log_place` run on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import msgspec
import pytest
from aiohttp import web

from kleinmaelzung.hub import HubConfig, HubStartError, Record, create_app, start_hub
from kleinmaelzung.hub.store import (
    LogHealth,
    LogUrlError,
    SqliteStore,
    StoreUnavailable,
    postgres_schema,
    redact_url,
    store_for_url,
)
from kleinmaelzung.hub.store.postgres import PostgresBackend, PostgresStore
from kleinmaelzung.hub.store.postgres_schema import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION

from .log_backends import LogPlace, log_place, postgres_place, postgres_url
from .peers import data, instrument, raw_agent

__all__ = ["log_place", "postgres_place", "postgres_url"]  # fixtures, used by name

KMZ = [sys.executable, "-m", "kleinmaelzung.cli"]
#: 2026-03-15 12:00 UTC and one hour in seconds.
MARCH = datetime(2026, 3, 15, 12, tzinfo=UTC).timestamp()
HOUR = 3600.0


def samples_record(
    instrument_id: str, run: str, first_seq: int, times: list[float], received: float
) -> Record:
    """A data record as the hub logs it: the frame, and what its ack needs."""
    frame = msgspec.json.encode(
        {
            "type": "data",
            "samples": [
                {
                    "instrument": instrument_id,
                    "seq": first_seq + i,
                    "ts": ts,
                    "values": {"temperature": 20.0 + i, "ok": True},
                }
                for i, ts in enumerate(times)
            ],
        }
    )
    last = first_seq + len(times) - 1
    return Record(
        received,
        "in",
        "pi-1",
        "data",
        frame,
        instrument_id,
        None,
        (f"pi-1/{run}", {instrument_id: last}),
        run,
    )


# --- the sample table ---------------------------------------------------------


async def test_samples_are_queried_by_instrument_and_time_range(log_place: LogPlace) -> None:
    store = log_place.store()
    await store.open()
    # An hour of kiln readings, one a minute, in frames of ten; a balance beside it.
    for frame in range(6):
        times = [MARCH + 60.0 * (frame * 10 + i) for i in range(10)]
        store.append(samples_record("kiln-air", "r1", frame * 10, times, times[-1] + 0.5))
        store.append(samples_record("balance", "r1", frame, [times[0]], times[0] + 0.25))
    await store.flush()
    # The second quarter hour: [15 min, 30 min).
    found = await store.query_samples("kiln-air", MARCH + 900.0, MARCH + 1800.0)
    assert [s.seq for s in found] == list(range(15, 30))
    first = found[0]
    assert (first.instrument, first.run, first.ts) == ("kiln-air", "r1", MARCH + 900.0)
    assert first.received == MARCH + 60.0 * 19 + 0.5  # its frame's arrival
    assert first.values == {"temperature": 25.0, "ok": True}
    assert len(await store.query_samples("kiln-air", MARCH, MARCH + HOUR, limit=7)) == 7
    assert len(await store.query_samples("balance", MARCH, MARCH + HOUR)) == 6
    assert await store.query_samples("kiln-air", MARCH + HOUR, MARCH + 2 * HOUR) == []
    await store.close()


async def test_a_sample_row_is_committed_with_its_message_and_acknowledged_once(
    log_place: LogPlace,
) -> None:
    acks: list[dict[str, dict[str, int]]] = []
    store = log_place.store(on_committed=acks.append)
    await store.open()
    store.append(samples_record("kiln-air", "r1", 0, [MARCH, MARCH + 1], MARCH + 2))
    await store.flush()
    # Forwarded to two clients: still one message row, naming both, and one row per sample.
    store.append(
        dataclasses.replace(
            samples_record("kiln-air", "r1", 2, [MARCH + 2], MARCH + 3),
            delivered_to="client-1/a,client-2/b",
        )
    )
    # The writer schedules the ack callback before it resolves the flush.
    await store.flush()
    assert [e.delivered_to for e in await store.query(instrument="kiln-air")] == [
        "client-1/a,client-2/b",
        None,
    ]
    assert [s.seq for s in await store.query_samples("kiln-air", 0.0, MARCH + HOUR)] == [0, 1, 2]
    assert acks == [{"pi-1/r1": {"kiln-air": 1}}, {"pi-1/r1": {"kiln-air": 2}}]
    await store.close()


async def test_a_frame_without_readable_samples_keeps_its_message_row(
    log_place: LogPlace,
) -> None:
    store = log_place.store()
    await store.open()
    record = dataclasses.replace(
        samples_record("kiln-air", "r1", 0, [MARCH], MARCH), message=b'{"type":"data","samples":7}'
    )
    store.append(record)
    store.append(samples_record("kiln-air", "r1", 1, [MARCH + 1], MARCH + 1))
    await store.flush()
    assert len(await store.query(instrument="kiln-air")) == 2
    assert [s.seq for s in await store.query_samples("kiln-air", 0.0, MARCH + HOUR)] == [1]
    assert store.dropped_rows == 0
    await store.close()


# --- PostgreSQL's schema --------------------------------------------------------------


async def test_postgres_schema_is_versioned_and_migrated_once(postgres_place: LogPlace) -> None:
    for _ in range(2):
        store = postgres_place.store()
        await store.open()
        await store.close()
    rows = await postgres_place.sql("SELECT version FROM kmz_schema_version ORDER BY version")
    assert [v for (v,) in rows] == list(range(1, POSTGRES_SCHEMA_VERSION + 1))


async def test_postgres_log_of_version_1_is_upgraded_in_place(postgres_place: LogPlace) -> None:
    # A log as the first PostgreSQL hubs left it: one run per instrument.
    await postgres_place.sql(f'CREATE SCHEMA "{postgres_place.schema}"')
    for statement in (
        postgres_schema.VERSION_TABLE,
        postgres_schema.MIGRATIONS[0],
        "INSERT INTO kmz_schema_version (version) VALUES (1)",
        "INSERT INTO instrument_seq (instrument, run, seq) VALUES ('balance', 'r1', 7)",
    ):
        await postgres_place.script(statement)
    store = postgres_place.store()
    await store.open()
    assert await store.last_seqs("r1", ["balance"]) == {"balance": 7}
    store.append(dataclasses.replace(samples_record("balance", "r2", 0, [MARCH], MARCH)))
    await store.flush()
    assert await store.last_seqs("r1", ["balance"]) == {"balance": 7}  # kept beside r2's
    assert await store.last_seqs("r2", ["balance"]) == {"balance": 0}
    await store.close()
    rows = await postgres_place.sql("SELECT version FROM kmz_schema_version ORDER BY version")
    assert [v for (v,) in rows] == list(range(1, POSTGRES_SCHEMA_VERSION + 1))


async def test_postgres_refuses_a_log_of_a_newer_hub(postgres_place: LogPlace) -> None:
    store = postgres_place.store()
    await store.open()
    await store.close()
    await postgres_place.sql("INSERT INTO kmz_schema_version (version) VALUES (99)")
    newer = postgres_place.store()
    with pytest.raises(StoreUnavailable, match="schema version 99, newer than this hub's"):
        await newer.open()


async def test_postgres_samples_go_to_monthly_partitions_that_retention_can_drop(
    postgres_place: LogPlace,
) -> None:
    store = postgres_place.store()
    await store.open()
    january = datetime(2026, 1, 20, tzinfo=UTC).timestamp()
    store.append(samples_record("kiln-air", "r1", 0, [january], january))
    store.append(samples_record("kiln-air", "r1", 1, [MARCH], MARCH))
    await store.flush()
    partitions = {
        name
        for (name,) in await postgres_place.sql(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'sample'::regclass"
        )
    }
    # Each month from the first to the one after the newest, and the current ones.
    assert {"sample_2026_01", "sample_2026_02", "sample_2026_03", "sample_2026_04"} <= partitions
    now = datetime.now(UTC)
    assert f"sample_{now.year:04d}_{now.month:02d}" in partitions
    # Retention: dropping January's partition drops its samples and nothing else.
    await postgres_place.sql("DROP TABLE sample_2026_01")
    assert [s.seq for s in await store.query_samples("kiln-air", 0.0, MARCH + HOUR)] == [1]
    await store.close()


async def test_postgres_writer_reconnects_after_losing_its_connection(
    postgres_place: LogPlace, caplog: pytest.LogCaptureFixture
) -> None:
    acks: list[dict[str, dict[str, int]]] = []
    store = postgres_place.store(on_committed=acks.append)
    await store.open()
    store.append(samples_record("kiln-air", "r1", 0, [MARCH], MARCH))
    await store.flush()
    # The server ends the writer's session (an admin, a failover, a restart).
    assert isinstance(store.backend, PostgresBackend)
    pid = store.backend.writer_pid()
    await postgres_place.sql("SELECT pg_terminate_backend($1)", pid)
    # Received in a month without a partition yet: making one is the first
    # statement the writer sends after losing its connection.
    later = datetime(2027, 6, 1, tzinfo=UTC).timestamp()
    store.append(samples_record("kiln-air", "r1", 1, [MARCH + 1], later))
    await asyncio.wait_for(store.flush(), 10)
    assert [s.seq for s in await store.query_samples("kiln-air", 0.0, MARCH + HOUR)] == [0, 1]
    assert acks[-1] == {"pi-1/r1": {"kiln-air": 1}}
    assert store.dropped_rows == 0
    assert store.backend.writer_pid() != pid
    assert "traffic log write failed; retrying" in caplog.text
    await store.close()


# --- choosing the backend ----------------------------------------------------------


def test_a_log_url_names_its_backend(tmp_path: Path) -> None:
    store = store_for_url(f"sqlite://{tmp_path}/t.sqlite3")
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "t.sqlite3"
    relative = store_for_url("sqlite:logs/t.sqlite3")
    assert isinstance(relative, SqliteStore)
    assert relative.path == Path("logs/t.sqlite3")
    for url in ("postgresql://kmz@db.lab/kmz", "postgres://kmz:pw@db.lab:5433/kmz?schema=lab"):
        assert isinstance(store_for_url(url), PostgresStore)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://kmz:secret@db/kmz", "unknown scheme 'mysql'; use sqlite:///"),
        ("/var/lib/kmz/traffic.sqlite3", "no scheme; use sqlite:///"),
        ("sqlite://host/t.sqlite3", "a SQLite log is a file"),
    ],
)
def test_a_log_url_this_hub_cannot_use_is_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(LogUrlError, match=message) as caught:
        store_for_url(url)
    assert "secret" not in str(caught.value)


def test_a_shown_url_has_no_password() -> None:
    assert redact_url("postgresql://kmz:s3cret@db:5432/kmz?schema=a") == (
        "postgresql://kmz@db:5432/kmz?schema=a"
    )
    assert redact_url("postgresql://db/kmz?password=s3cret&sslmode=require") == (
        "postgresql://db/kmz?sslmode=require"
    )
    assert redact_url("postgresql://:s3cret@db/kmz") == "postgresql://db/kmz"
    assert redact_url("sqlite:///var/t.sqlite3") == "sqlite:///var/t.sqlite3"


async def test_a_hub_whose_log_server_is_unreachable_does_not_start(tmp_path: Path) -> None:
    # Port 1 on this machine: nothing listens, the connection is refused at once.
    config = HubConfig(
        port=0, data_dir=tmp_path / "h", log_url="postgresql://kmz:s3cret@127.0.0.1:1/kmz"
    )
    with pytest.raises(HubStartError) as caught:
        await asyncio.wait_for(start_hub(config), 20)
    message = str(caught.value)
    assert "cannot open the traffic log postgresql://kmz@127.0.0.1:1/kmz" in message
    assert "s3cret" not in message


def test_kmz_hub_with_an_unknown_log_url_says_so_and_exits(tmp_path: Path) -> None:
    result = subprocess.run(
        [*KMZ, "hub", "--port", "0", "--data", str(tmp_path), "--log", "redis://:pw@127.0.0.1/0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "kmz hub: traffic log URL redis://127.0.0.1/0: unknown scheme 'redis'" in result.stderr
    assert "Traceback" not in result.stderr


# --- the hub on each backend ---------------------------------------------------------


async def test_an_app_given_a_store_on_any_backend_opens_it_and_acknowledges(
    log_place: LogPlace, tmp_path: Path
) -> None:
    store = log_place.store()
    app = create_app(config=HubConfig(port=0, data_dir=tmp_path / "unused"), store=store)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with raw_agent(f"http://127.0.0.1:{port}", "pi", [instrument("balance")]) as agent:
            await agent.send(data("balance", 0, 1))
            ack = await agent.receive_type("ack")
            assert ack["seqs"] == {"balance": 1}
        logged = await store.query_samples("balance", 0.0, 100.0)
        assert [(s.seq, s.run, s.values) for s in logged] == [
            (0, "r1", {"mass": 0.0}),
            (1, "r1", {"mass": 1.0}),
        ]
    finally:
        await runner.cleanup()
    assert not (tmp_path / "unused").exists()


async def test_a_hub_started_with_a_log_url_logs_there(log_place: LogPlace, tmp_path: Path) -> None:
    running = await start_hub(HubConfig(port=0, data_dir=tmp_path / "h", log_url=log_place.url))
    try:
        async with raw_agent(running.url, "pi", [instrument("balance")]) as agent:
            await agent.send(data("balance", 0))
            assert (await agent.receive_type("ack"))["seqs"] == {"balance": 0}
    finally:
        await running.stop()
    ((count,),) = await log_place.sql("SELECT count(*) FROM sample")
    assert count == 1
    assert not (tmp_path / "h").exists()


# --- PostgreSQL going away ------------------------------------------------------------


class Cable:
    """A TCP relay to the server that can be pulled out (all connections cut, none
    accepted) and plugged in again: the server down, as the hub sees it."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def plug_in(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def pull_out(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}


async def test_postgres_down_degrades_the_log_and_it_recovers_with_nothing_lost(
    postgres_place: LogPlace,
) -> None:
    server = urlsplit(postgres_place.url)
    cable = Cable((server.hostname or "127.0.0.1", server.port or 5432))
    await cable.plug_in()
    user = server.netloc.rpartition("@")[0]  # with its password, if it has one
    relay = f"{user}@127.0.0.1:{cable.port}" if user else f"127.0.0.1:{cable.port}"
    through_cable = postgres_place.url.replace(server.netloc, relay)
    changed = asyncio.Event()
    acks: list[dict[str, dict[str, int]]] = []
    store = PostgresStore(
        through_cable,
        degraded_after_s=0.3,
        on_committed=acks.append,
        on_health=lambda _: changed.set(),
    )
    await store.open()
    store.append(samples_record("kiln-air", "r1", 0, [MARCH], MARCH))
    await store.flush()
    committed = list(acks)
    await cable.pull_out()
    for seq in range(1, 50):
        store.append(samples_record("kiln-air", "r1", seq, [MARCH + seq], MARCH + seq))
    await asyncio.wait_for(changed.wait(), 20)
    changed.clear()
    assert store.health.state == "degraded"
    assert f"traffic log {redact_url(through_cable)} cannot be written" in store.health.reason
    assert acks == committed  # nothing acknowledged that is not committed
    await cable.plug_in()
    await asyncio.wait_for(changed.wait(), 20)
    assert store.health == LogHealth()
    await asyncio.wait_for(store.flush(), 20)
    logged = await store.query_samples("kiln-air", 0.0, MARCH + HOUR)
    assert [s.seq for s in logged] == list(range(50))
    assert acks[-1] == {"pi-1/r1": {"kiln-air": 49}}
    assert store.dropped_rows == 0
    await store.close()


async def test_health_says_why_the_log_is_degraded_and_when_it_is_ok_again(
    log_place: LogPlace, tmp_path: Path
) -> None:
    changed = asyncio.Event()
    store = log_place.store(degraded_after_s=0.3, on_health=lambda _: changed.set())
    running = await start_hub(HubConfig(port=0, data_dir=tmp_path / "h"), store=store)
    try:
        async with (
            aiohttp.ClientSession() as http,
            raw_agent(running.url, "pi", [instrument("balance")]) as agent,
        ):
            async with log_place.writes_blocked():
                await agent.send(data("balance", 0, 1))
                await asyncio.wait_for(changed.wait(), 20)
                changed.clear()
                async with http.get(running.url + "/api/health") as response:
                    health = await response.json()
                assert health["status"] == "degraded"
                assert health["log"]["state"] == "degraded"
                assert "cannot be written" in health["log"]["reason"]
                async with http.get(running.url + "/api/ready") as response:
                    assert response.status == 503
                    readiness = await response.json()
                assert readiness["ready"] is False
                assert "cannot be written" in readiness["reasons"][0]
            await asyncio.wait_for(changed.wait(), 20)
            async with http.get(running.url + "/api/health") as response:
                health = await response.json()
            assert (health["status"], health["log"]) == ("ok", {"state": "ok", "reason": ""})
            async with http.get(running.url + "/api/ready") as response:
                assert (response.status, await response.json()) == (
                    200,
                    {"ready": True, "reasons": []},
                )
            assert (await agent.receive_type("ack"))["seqs"] == {"balance": 1}
    finally:
        await running.stop()
