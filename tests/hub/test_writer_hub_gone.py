"""A writer process whose hub died commits clients' traffic, not its agents' samples.

Hubs sharing one log: the agent of a hub killed resends what it was not told
was logged to another hub, which looks up what the log holds once, at the
first frame of each run. A dead hub's writer committing those samples after
that lookup logged them twice; now it leaves them out (`writer_process`).
"""

from __future__ import annotations

import io
import queue
import sqlite3
import threading
from pathlib import Path

from kleinmaelzung.hub.store import SqliteBackend
from kleinmaelzung.hub.store.base import Record
from kleinmaelzung.hub.store.committer import Committer
from kleinmaelzung.hub.store.writer_process import (
    _Answers,
    _Chunk,
    _End,
    _Queued,
    write_forever,
)

DATA = (
    b'{"type":"data","run":"r.1","samples":'
    b'[{"instrument":"therm-01","seq":0,"ts":1.0,"values":{"temperature":20.5}}]}'
)
SUBSCRIBE = b'{"type":"subscribe","id":"1","patterns":["therm-*"]}'


def _records() -> list[Record]:
    data = Record(
        ts=1.0,
        direction="in",
        peer="pi",
        type="data",
        message=DATA,
        instrument="therm-01",
        ack=("pi r.1", {"therm-01": 0}),
        run="r.1",
        position=0,
    )
    subscribe = Record(ts=1.0, direction="in", peer="watch", type="subscribe", message=SUBSCRIBE)
    object.__setattr__(subscribe, "position", 1)
    return [data, subscribe]


def _write(path: Path, *, hub_gone: bool) -> list[str]:
    """Run the writer's loop over two records and the end; return the types logged."""
    backend = SqliteBackend(path)
    backend.open()
    items: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
    items.put(_Chunk(0, 1, list(_records()), 2, True))
    items.put(_End(hub_gone=hub_gone))
    gone = threading.Event()
    if hub_gone:
        gone.set()
    committer = Committer(backend, threading.Event(), writer="w1")
    try:
        write_forever(committer, items, _Answers(io.BytesIO()), -1, threading.Event(), gone)
    finally:
        backend.close()
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT type FROM traffic ORDER BY id")]


def test_a_hub_that_stopped_gets_everything_committed(tmp_path: Path) -> None:
    assert _write(tmp_path / "log.sqlite3", hub_gone=False) == ["data", "subscribe"]


def test_a_hub_that_died_leaves_its_agents_samples_to_them(tmp_path: Path) -> None:
    assert _write(tmp_path / "log.sqlite3", hub_gone=True) == ["subscribe"]
