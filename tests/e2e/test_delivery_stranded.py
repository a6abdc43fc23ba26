"""A connected agent delivers all it takes: nothing waits in its spool for the next connection.

Found by the hub-kill fault test (issue 9) and fixed in 50aa579: samples taken
while `Spool.start_session` committed were neither live nor in that
connection's backlog; they waited in the spool until the next connection,
however long this one lasted, and an agent stopped with a healthy hub said it
kept them. Each connection below is a chance for that to happen again; the
hub's log shows it as a backlog frame that came a connection late.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from .delivery_check import read_hub_log, read_spool
from .fault_proxy import FaultProxy
from .processes import (
    StreamingLab,
    free_port,
    kept_in_spool,
    logged_times,
    terminate,
    wait_until_async,
)

#: Connections to start: before the fix, each one stranded the samples taken
#: during its first commit (about one in two at 20 instruments x 50 Hz).
CONNECTIONS = 5
#: How long each connection lasts: long enough to send its (small) backlog.
CONNECTED_S = 1.0


@pytest.mark.timeout(120)
async def test_a_connected_agent_sends_all_it_took_on_that_connection(tmp_path: Path) -> None:
    port = free_port()
    async with FaultProxy(port) as proxy:
        lab = StreamingLab(
            tmp_path, instruments=20, poll_interval_s=0.02, port=port, agent_hub_url=proxy.url
        )
        try:
            await asyncio.to_thread(lab.start)
            agent = lab.agent
            assert agent is not None
            for connection in range(1, CONNECTIONS + 1):
                await wait_until_async(
                    lambda n=connection: (
                        len(logged_times(agent.output(), "connected to hub")) >= n or None
                    ),
                    f"connection {connection}",
                    10.0,
                    agent,
                )
                await asyncio.sleep(CONNECTED_S)  # the connection's life, not a synchronisation
                if connection < CONNECTIONS:
                    await proxy.reset()
            assert await asyncio.to_thread(terminate, agent) == 0, lab.outputs()
            kept = kept_in_spool(agent.output())
            assert lab.hub is not None
            assert await asyncio.to_thread(lab.hub.interrupt) == 0, lab.outputs()
        finally:
            await asyncio.to_thread(lab.stop)

    # A backlog frame of run abc.k belongs on connection k + 1: the one after
    # the connection it was taken on (or before, for abc.0).
    late = {}
    for frame in read_hub_log(lab.log_path).frames:
        taken_on = int(frame.run.rsplit(".", 1)[1])
        if frame.backlog and frame.connection > taken_on + 1:
            late[frame.run] = late.get(frame.run, 0) + len(frame.samples)
    spool = read_spool(lab.spool_path)
    assert not late and kept is None and not spool.samples, (
        f"sent a connection late, by run: {late}; kept at exit: {kept}, by run: {dict(spool.runs)}"
    )
