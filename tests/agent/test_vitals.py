"""The agent's own figures, as it reports them to the hub."""

from __future__ import annotations

import hashlib

from kleinmaelzung.agent.vitals import Vitals, rss_bytes


def test_cpu_use_is_measured_between_readings() -> None:
    now = [100.0]
    used = [5.0]
    vitals = Vitals(clock=lambda: now[0], cpu=lambda: used[0])
    now[0], used[0] = 110.0, 7.5  # 2.5 s of CPU in 10 s
    assert vitals.read()[:2] == (10.0, 25.0)
    now[0] = 120.0  # idle since
    assert vitals.read()[:2] == (20.0, 0.0)


def test_the_real_process_reports_plausible_figures() -> None:
    vitals = Vitals()
    for _ in range(20_000):
        hashlib.sha256(b"x" * 1000).digest()  # some CPU to measure
    uptime_s, cpu_pct, rss = vitals.read()
    assert uptime_s >= 0 and cpu_pct > 0
    assert rss is not None and 10 << 20 < rss < 2 << 30
    assert rss_bytes() is not None
