"""A SQLite traffic log on a volume that fills up: degraded, nothing acknowledged, then recovered.

The volume is a real one: a 4 MiB tmpfs mounted for the test (root only).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kleinmaelzung.hub import Record
from kleinmaelzung.hub.store import LogHealth, SqliteStore

VOLUME_BYTES = 4 * 1024 * 1024


@contextlib.contextmanager
def mounted_volume(volume: Path, size_bytes: int) -> Iterator[Path]:
    """`volume` as a file system of `size_bytes` of its own (a tmpfs), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small volume needs root")
    volume.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(volume)],
        check=True,
        capture_output=True,
        timeout=10,
    )
    try:
        yield volume
    finally:
        subprocess.run(["umount", "-l", str(volume)], check=False, timeout=10)


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB file system of its own."""
    with mounted_volume(tmp_path / "volume", VOLUME_BYTES) as volume:
        yield volume


def fill(volume: Path) -> Path:
    """Take every free byte of the volume with one file; returns it."""
    filler = volume / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):  # ENOSPC: on to smaller writes
                while True:
                    os.write(descriptor, b"\0" * size)
    finally:
        os.close(descriptor)
    return filler


def record(i: int) -> Record:
    payload = b'{"type":"data","samples":[{"instrument":"kiln-air","seq":%d,"ts":%d.0,' % (i, i)
    payload += b'"values":{"note":"%s"}}]}' % (b"x" * 2000)
    return Record(
        1000.0 + i,
        "in",
        "pi-1",
        "data",
        payload,
        "kiln-air",
        None,
        ("pi-1/r1", {"kiln-air": i}),
        "r1",
    )


async def test_a_full_disk_degrades_the_log_and_it_recovers_with_nothing_lost(
    small_volume: Path,
) -> None:
    changed = asyncio.Event()
    acks: list[dict[str, dict[str, int]]] = []
    store = SqliteStore(
        small_volume / "traffic.sqlite3",
        degraded_after_s=0.3,
        on_committed=acks.append,
        on_health=lambda _: changed.set(),
    )
    await store.open()
    store.append(record(0))
    await store.flush()
    committed = list(acks)
    filler = fill(small_volume)
    with pytest.raises(OSError, match="No space left on device") as full:
        (small_volume / "probe").write_bytes(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    # About 1 MB of samples: more than any room SQLite kept in its files.
    for i in range(1, 500):
        store.append(record(i))
    await asyncio.wait_for(changed.wait(), 20)
    changed.clear()
    assert store.health.state == "degraded"
    assert "cannot be written: database or disk is full" in store.health.reason
    assert acks == committed  # nothing acknowledged that is not committed
    # Room again (the operator deleted old files): the log catches up by itself.
    filler.unlink()
    await asyncio.wait_for(changed.wait(), 20)
    assert store.health == LogHealth()
    await asyncio.wait_for(store.flush(), 20)
    assert [e.ts for e in await store.query(limit=1000)] == [1000.0 + i for i in range(499, -1, -1)]
    assert acks[-1] == {"pi-1/r1": {"kiln-air": 499}}
    assert store.dropped_rows == 0
    await store.close()
