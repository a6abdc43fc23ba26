"""History, the log and exports from a hub over https: the lab CA and pin are asked for.

Needs the hub's TLS (`start_hub` serving `tls_cert`/`tls_key`): commit with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kleinmaelzung.client import Client, HubUnreachable, LogFilter, export, query_log, stream_log
from kleinmaelzung.hub import HubConfig, start_hub

from ..hub.certificates import make_certificates


async def test_over_https_the_lab_ca_is_asked_for(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "tls")
    running = await start_hub(
        HubConfig(port=0, data_dir=tmp_path / "hub-data", tls_cert=certs.cert, tls_key=certs.key)
    )
    try:
        trust = {"ca_file": certs.ca, "pin_sha256": certs.pin}
        async with Client(running.url, **trust) as hub:
            assert await hub.history("kiln-air") == []
        page = await query_log(running.url, LogFilter(since="-1h"), **trust)
        assert page.entries  # the hub logged the client's hello
        assert [e.id async for e in stream_log(running.url, limit=1, **trust)]
        done = await export(running.url, tmp_path / "none.csv", format="csv", **trust)
        assert done.rows == 0
        with pytest.raises(HubUnreachable, match="not trusted"):
            await export(running.url, tmp_path / "no.csv")
    finally:
        await running.stop()
