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
busy, and the log falls behind. So the writer starts at `LOW` (nice 10,
which gets its share), and the hub lowers it to `IDLE` once the log has kept
up for a while (`process.ProcessWriter`); a writer at `IDLE` that falls
behind is replaced by one at `LOW`, and lowered again after a long calm (an
unprivileged process cannot leave SCHED_IDLE by itself, hence a new
process). A hub that saturates its core (S1 in benchmarks/run.py) keeps its
writer at `LOW` from the start: starting at `IDLE` and replacing it cost S1
8 % of its deliveries (313,000/s against 342,000 before, 350,000 so).
"""

from __future__ import annotations

import os

from .writer import WRITER_NICE

#: SCHED_IDLE where there is one (Linux), else nice 10.
IDLE = "idle"
#: Nice 10 (`writer.WRITER_NICE`): a share of the CPU when every core is busy.
LOW = "low"


def lower_priority(priority: str) -> str:
    """Lower this thread, and the threads it starts afterwards, to `priority`; what it got."""
    if priority == IDLE and _idle(0):
        return IDLE
    os.nice(WRITER_NICE)
    return LOW


def lower_threads(priority: str) -> str:
    """Lower every thread of this process to `IDLE` (`LOW` asks nothing); what they got."""
    if priority != IDLE:
        return LOW
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: no SCHED_IDLE either
        return LOW
    got = [_idle(tid) for tid in threads]
    return IDLE if all(got) else LOW


def _idle(tid: int) -> bool:
    if not hasattr(os, "SCHED_IDLE"):
        return False
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except OSError:  # a thread that ended meanwhile, or a sandbox that forbids it
        return False
    return True
