"""How the log's writer process gives the CPU to the hub's forwarding loop.

The database work must not take the core from the loop while a sample waits
to be forwarded. At nice 10 (`WRITER_NICE`) it still did: the scheduler
(EEVDF, Linux 6.6 and later) lets a running task finish its slice before a
waking one of higher weight runs, so a commit's few milliseconds of CPU sat
in front of the hub's next frame. S2 in benchmarks/run.py, hub and writer on
one core, a commit every 50 ms: p99 1.8-2.1 ms at nice 10, 1.06 ms at nice 10
with a 20 ms slice, 0.51-0.83 ms at SCHED_IDLE, which any waking task of the
normal class preempts at once.

SCHED_IDLE has a price: the writer gets almost nothing while every core is
busy with other work, and the log falls behind. So a writer at `IDLE` that
stays behind (`process.ProcessWriter`) is replaced by one at `LOW` (nice 10,
which gets its share), and tried at `IDLE` again after a long calm. An
unprivileged process cannot leave SCHED_IDLE by itself, hence a new process.
"""

from __future__ import annotations

import os

from .writer import WRITER_NICE

#: SCHED_IDLE where there is one (Linux), else nice 10.
IDLE = "idle"
#: Nice 10 (`writer.WRITER_NICE`): a share of the CPU when every core is busy.
LOW = "low"


def lower_priority(priority: str) -> str:
    """Lower this process (and the threads it starts afterwards) to `priority`; what it got."""
    if priority == IDLE and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass  # a sandbox that forbids it: nice, below
        else:
            return IDLE
    os.nice(WRITER_NICE)
    return LOW
