"""`kmz calibration approve` as an admin types it: a failed calibration is refused, saying
to add ``--failed``; with ``--failed`` it is approved, applied to nothing, and the correction
in force until then ends. `kmz` runs as a process of its own against a real hub.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from ..hub.auth_setup import Lab
from .test_failed_calibration import signed_run
from .test_hub_api import Balance, api, lab, reason_of, register

__all__ = ["lab"]  # the fixture, used by name

KMZ = [sys.executable, "-m", "kleinmaelzung.cli"]
DEADLINE_S = 30.0


async def kmz(hub: Lab, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `kmz` with `user`'s token, without blocking the hub in this event loop."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    env["KMZ_TOKEN"] = hub.tokens[user]
    process = await asyncio.create_subprocess_exec(
        *KMZ, *args, "--hub", hub.url, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), DEADLINE_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


@pytest.mark.slow
async def test_kmz_calibration_approve_failed_signs_a_failure_applied_to_nothing(
    lab: tuple[Lab, Balance],
) -> None:
    hub, _ = lab
    await register(hub)
    admin, viewer = api(hub, "ada"), api(hub, "vic")
    good = await signed_run(hub, 0.001)  # within the 5 mg tolerance
    approved = await kmz(hub, "ada", "calibration", "approve", good, "--name", "Ada Admin")
    assert approved.returncode == 0, approved.stderr
    assert f"applied to balance as {good}/1" in approved.stdout
    bad = await signed_run(hub, 0.020)  # 20 mg out at every point

    # Without --failed: refused, nothing changed, and the refusal says what to type.
    refused = await kmz(hub, "ada", "calibration", "approve", bad, "--name", "Ada Admin")
    assert refused.returncode != 0
    assert "calibration_failed" in refused.stderr and "--failed" in refused.stderr
    assert not (await viewer.get(bad)).approved
    assert [c.calibration for c in await viewer.corrections() if c.withdrawn_at is None] == [
        f"{good}/1"
    ]

    # With --failed: approved as a failure, applied to nothing; the earlier correction ended.
    failed = await kmz(hub, "ada", "calibration", "approve", bad, "--failed", "--name", "Ada Admin")
    assert failed.returncode == 0, failed.stderr
    assert failed.stdout.startswith(f"{bad} approved (hash ")
    assert failed.stdout.rstrip().endswith("; fail, applied to nothing")
    view = await admin.get(bad)
    assert view.approved and view.verdict == "fail" and view.correction is None
    assert all(c.withdrawn_at is not None for c in await viewer.corrections())
    assert (await reason_of(hub, "balance")).startswith(f"calibration {bad}/1 failed on ")
