"""The audit queries of issue 11 on every log backend: entries by kind, newest first."""

from __future__ import annotations

from kleinmaelzung.hub import Record

from .log_backends import LogPlace, log_place, postgres_place, postgres_url

__all__ = ["log_place", "postgres_place", "postgres_url"]  # fixtures, used by name


async def test_the_log_is_queried_by_type_and_instrument(log_place: LogPlace) -> None:
    store = log_place.store()
    await store.open()
    rows = [
        ("command", "kiln-air"),
        ("status", "kiln-air"),
        ("reply", "kiln-air"),
        ("refused", None),
        ("command", "balance"),
    ]
    for ts, (type_, instrument) in enumerate(rows):
        store.append(Record(float(ts), "in", "client-1@oscar", type_, b"{}", instrument))
    await store.flush()
    audit = await store.query(types=("command", "reply"), limit=10)
    assert [(e.type, e.instrument) for e in audit] == [
        ("command", "balance"),
        ("reply", "kiln-air"),
        ("command", "kiln-air"),
    ]
    kiln = await store.query(instrument="kiln-air", types=("command",), limit=10)
    assert [e.ts for e in kiln] == [0.0]
    assert [e.type for e in await store.query(types=("refused",), limit=10)] == ["refused"]
    assert len(await store.query(types=(), limit=10)) == 5
    await store.close()
