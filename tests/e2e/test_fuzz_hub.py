"""Fuzzing a running hub (issue 11): malformed, truncated and hostile frames on both endpoints,
before and after auth. No crash, no traceback in its log, every frame answered or the
connection closed with a code, memory bounded.

The default run sends 5,000 frames; the slow one 100,000 (figures in the CHANGELOG come from
`python -m tests.e2e.fuzz_run --frames 100000`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from .fuzz_run import FUZZ_CONFIG, FuzzReport, fuzz_hub
from .hostile import AuthedHub
from .processes import get_json

#: Growth of the hub's memory (with its log's writer) that a fuzz run may cause.
MEMORY_GROWTH_LIMIT = 64 << 20


async def _fuzz(tmp_path: Path, frames: int, seed: int) -> tuple[FuzzReport, str]:
    hub = await asyncio.to_thread(AuthedHub.start, tmp_path, FUZZ_CONFIG)
    try:
        report = await fuzz_hub(hub, frames, seed)
        assert hub.process.popen.poll() is None, "the hub died"
        health = await asyncio.to_thread(get_json, hub.url + "/api/health")
        assert health is not None, "the hub stopped answering"
        output = hub.process.output()
    finally:
        await asyncio.to_thread(hub.stop)
    return report, output


def _check(report: FuzzReport, output: str, frames: int) -> None:
    assert report.pre_auth + report.post_auth == frames
    assert report.unexplained == [], report.unexplained[:10]
    assert report.errors >= report.errors_due
    assert report.pre_auth_answered + report.pre_auth_closed == report.pre_auth
    assert "Traceback" not in output
    assert " ERROR " not in output and "handler failed" not in output
    growth = report.rss_peak - report.rss_before
    assert growth < MEMORY_GROWTH_LIMIT, f"hub grew {growth / 2**20:.0f} MiB: {report.figures()}"


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_small_fuzz_run(tmp_path: Path) -> None:
    frames = 5000
    report, output = await _fuzz(tmp_path, frames, seed=3)
    _check(report, output, frames)


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_a_fuzz_run_of_100000_frames(tmp_path: Path) -> None:
    frames = 100_000
    report, output = await _fuzz(tmp_path, frames, seed=11)
    _check(report, output, frames)
