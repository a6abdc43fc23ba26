"""A calibration that fails is never applied to the stream silently (ISO/IEC 17025 §7.10).

A failed as-left result means the instrument is not fit for use: its
correction is not calibrated data. Approving such a record is refused with
``calibration_failed`` unless the approver says the record is signed as a
failure (``apply_correction=False``); then the record is kept as approved,
nothing is applied, the correction in force until then ends, and the
instrument's status says it failed.
"""

from __future__ import annotations

import datetime

import pytest

from kleinmaelzung.client import Client

from ..hub.auth_setup import Lab
from .test_hub_api import (
    BALANCE,
    TODAY,
    Balance,
    api,
    code_of,
    lab,
    next_sample,
    reading,
    reason_of,
    register,
)

__all__ = ["lab"]  # the fixture, used by name


async def signed_run(
    hub: Lab, error_g: float, *, span: float = 0.0, procedure: str = "balance-quick"
) -> str:
    """A run entered by hand, signed: the balance reads ``nominal * (1 + span) + error_g``."""
    operator = api(hub, "oscar")
    number = (
        await operator.start("balance", procedure, standards=("W-SET-1",))
    ).record.certificate_number
    for index, nominal in enumerate((0.0, 100.0, 200.0)):
        for _ in range(2):
            value = round(nominal * (1 + span) + error_g, 3)
            await operator.enter_reading(number, "as_found", index, value)
    await operator.enter_environment(number, "air temperature", 21.0, 21.5)
    await operator.sign(number, "Oscar Operator")
    return number


@pytest.mark.slow
async def test_a_failed_calibration_is_not_applied_and_the_instrument_says_it_failed(
    lab: tuple[Lab, Balance],
) -> None:
    hub, balance = lab
    await register(hub)
    admin, viewer = api(hub, "ada"), api(hub, "vic")
    good = await signed_run(hub, 0.001)  # within the 5 mg tolerance
    applied = await admin.approve(good, "Ada Admin")
    assert applied.verdict == "pass" and applied.correction is not None
    due_after_good = (await viewer.due(days=400))[0].next_due

    bad = await signed_run(hub, 0.020)  # 20 mg out at every point
    async with Client(hub.url, token=hub.tokens["vic"]) as client:
        samples = await client.subscribe("balance").start()

        # Approving it as if it passed is refused, saying why and what to do.
        code, message = await code_of(admin.approve(bad, "Ada Admin"))
        assert code == "calibration_failed"
        assert bad in message and "not fit for use" in message
        assert "apply_correction" in message
        # Nothing changed: still a draft, the earlier correction still applied.
        assert not (await viewer.get(bad)).approved
        await balance.send(reading(100.0), stable=True)
        sample = await next_sample(samples, balance.seq)
        assert sample.calibration == f"{good}/1"

        # Signed as a failure: approved and kept, applied to nothing.
        failed = await admin.approve(bad, "Ada Admin", apply_correction=False)
        assert failed.approved and failed.verdict == "fail" and failed.correction is None
        # The earlier correction ended with it: the data is no longer calibrated.
        await balance.send(reading(100.0), stable=True)
        sample = await next_sample(samples, balance.seq)
        assert sample.corrected == {} and sample.calibration is None

    versions = {c.calibration: c for c in await viewer.corrections()}
    assert set(versions) == {f"{good}/1"}
    assert versions[f"{good}/1"].withdrawn_at is not None
    assert f"{bad}/1 failed" in versions[f"{good}/1"].withdrawn_reason
    # The instrument's status says so, and its due date did not move on.
    assert await reason_of(hub, "balance") == (
        f"calibration {bad}/1 failed on {TODAY.isoformat()}: not fit for use"
    )
    assert (await viewer.due(days=400))[0].next_due == due_after_good
    assert due_after_good == TODAY + datetime.timedelta(days=BALANCE.calibration_interval_days or 0)

    # A passing calibration afterwards clears the note and applies again.
    again = await admin.approve(await signed_run(hub, 0.0), "Ada Admin")
    assert again.correction is not None
    assert await reason_of(hub, "balance") == ""


async def test_a_passing_calibration_may_be_approved_without_applying_it(
    lab: tuple[Lab, Balance],
) -> None:
    hub, _ = lab
    await register(hub)
    admin = api(hub, "ada")
    number = await signed_run(hub, 0.0)
    view = await admin.approve(number, "Ada Admin", apply_correction=False)
    assert view.approved and view.verdict == "pass" and view.correction is None
    assert await api(hub, "vic").corrections() == []
