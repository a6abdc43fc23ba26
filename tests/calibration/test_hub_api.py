"""The calibration API of a real hub on 127.0.0.1: a run captured from live samples, sign-off
with roles, the correction applied to the stream after approval and not before, withdrawal,
an approved record refusing changes, the certificate over HTTP, due dates and the audit trail."""

from __future__ import annotations

import asyncio
import datetime
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from kleinmaelzung.calibration import Instrument, Laboratory, ReferenceStandard
from kleinmaelzung.client import Client, RequestError, Sample, Subscription, fetch_log
from kleinmaelzung.client.calibrations import Calibrations

from ..hub.auth_setup import Lab, agent_hello, auth_lab, greeted
from ..hub.peers import RawPeer

PROCEDURE = """\
name = "balance-quick"
version = 1
title = "Balance linearity, three points"
quantity = "mass"
unit = "g"
repetitions = 2
tolerance = { absolute = 0.005 }
fit = { kind = "linear" }
stability = { flag = "stable" }

[[points]]
nominal = 0.0
apply = "empty pan"

[[points]]
nominal = 100.0
apply = "100 g weight W-100"

[[points]]
nominal = 200.0
apply = "200 g weight W-200"

[[environment]]
name = "air temperature"
unit = "°C"
"""

TODAY = datetime.datetime.now(datetime.UTC).date()
STANDARD = ReferenceStandard(
    id="W-SET-1",
    description="Weight set, OIML class F1",
    certificate_number="D-K-15071-01-00 2026-0412",
    expanded_uncertainty=0.0001,
    k=2.0,
    unit="g",
    traceability="PTB via DAkkS D-K-15071-01-00",
    due=TODAY + datetime.timedelta(days=100),
)
EXPIRED = ReferenceStandard(
    id="W-OLD",
    description="Old weight set",
    certificate_number="OLD-1",
    expanded_uncertainty=0.0001,
    k=2.0,
    unit="g",
    traceability="PTB",
    due=TODAY - datetime.timedelta(days=1),
)
BALANCE = Instrument(
    id="balance",
    description="Precision balance",
    manufacturer="Sartorius",
    model="Quintix (simulated)",
    serial_number="0038472915",
    resolution=0.001,
    unit="g",
    channel="mass",
    calibration_interval_days=365,
    next_due=TODAY - datetime.timedelta(days=3),
)


class Balance:
    """An agent peer announcing a balance; sends samples with the hub's clock as ts."""

    def __init__(self, peer: RawPeer) -> None:
        self.peer = peer
        self.seq = 0

    async def send(self, mass: float, stable: bool, ts: float | None = None) -> float:
        self.seq += 1
        ts = time.time() if ts is None else ts
        sample = {
            "instrument": "balance",
            "seq": self.seq,
            "ts": ts,
            "values": {"mass": mass, "stable": stable},
        }
        await self.peer.send({"type": "data", "samples": [sample]})
        return ts


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[tuple[Lab, Balance]]:
    async with auth_lab(tmp_path) as lab:
        hello = agent_hello("pi-1", ("balance",), lab.tokens["pi-1"])
        hello["instruments"][0]["channels"].append({"name": "stable"})
        async with greeted(lab.url, "/ws/agent", hello) as peer:
            yield lab, Balance(peer)


def api(lab: Lab, user: str) -> Calibrations:
    return Calibrations(lab.url, token=lab.tokens[user])


async def register(lab: Lab) -> None:
    admin = api(lab, "ada")
    await admin.register_laboratory(
        Laboratory(name="Kleinmälzung Versuchslabor", address="Malzweg 3, Freising")
    )
    await admin.register_standard(STANDARD)
    await admin.register_standard(EXPIRED)
    await admin.register_instrument(BALANCE)
    await admin.register_procedure(PROCEDURE, source="balance-quick.toml")


async def code_of(call: Any) -> tuple[str, str]:
    with pytest.raises(RequestError) as raised:
        await call
    return raised.value.code, raised.value.message


async def next_sample(samples: Subscription, seq: int) -> Sample:
    """The subscribed sample of this seq (earlier ones skipped), within a deadline."""
    while True:
        event = await asyncio.wait_for(anext(samples), 5)
        if isinstance(event, Sample) and event.seq >= seq:
            assert event.seq == seq
            return event


async def reason_of(lab: Lab, instrument: str) -> str:
    """The reason the hub lists with an instrument's state."""
    async with Client(lab.url, token=lab.tokens["vic"]) as client:
        records = {r.id: r for r in await client.instruments()}
    return records[instrument].reason


def reading(nominal: float) -> float:
    """The balance's display: a span error of +2 mg per 100 g."""
    return round(nominal * 1.00002, 3)


@pytest.mark.slow
async def test_a_run_from_live_samples_signed_approved_applied_and_withdrawn(
    lab: tuple[Lab, Balance],
) -> None:
    hub, balance = lab
    await register(hub)
    operator, admin, viewer = api(hub, "oscar"), api(hub, "ada"), api(hub, "vic")

    # Only an admin changes the registries; a viewer runs nothing.
    assert (await code_of(viewer.register_standard(STANDARD)))[0] == "forbidden"
    assert (await code_of(viewer.start("balance", "balance-quick")))[0] == "forbidden"
    # An expired standard cannot be used, and says why.
    code, message = await code_of(operator.start("balance", "balance-quick", standards=("W-OLD",)))
    assert code == "reference_standard_not_usable"
    assert "W-OLD" in message and (TODAY - datetime.timedelta(days=1)).isoformat() in message

    # Its calibration expired three days ago: its status says so.
    expired = f"calibration expired on {(TODAY - datetime.timedelta(days=3)).isoformat()}"
    assert await reason_of(hub, "balance") == expired

    view = await operator.start("balance", "balance-quick", standards=("W-SET-1",))
    number = view.record.certificate_number
    assert number == f"KMZ-{TODAY.year}-0001" and not view.approved

    # Not stable: no capture; stable: captured with the samples behind it.
    await balance.send(37.2, stable=False)
    assert (await code_of(operator.capture(number, "as_found", 1)))[0] == "not_stable"
    for index, nominal in enumerate((0.0, 100.0, 200.0)):
        for _ in range(2):
            await balance.send(reading(nominal) + 0.004, stable=False)
            await balance.send(reading(nominal), stable=True)
            view = await operator.capture(number, "as_found", index)
            assert view.captured is not None and view.captured.value == reading(nominal)
            assert view.captured.raw[-1].stable is True
            assert any(r.stable is False for r in view.captured.raw)
        # A third reading of a two-reading point is refused.
    assert (await code_of(operator.capture(number, "as_found", 2)))[0] == "conflict"

    # Signing needs the environment first; the operator enters it by hand.
    code, message = await code_of(operator.sign(number))
    assert code == "conflict" and "air temperature" in message
    await operator.enter_environment(number, "air temperature", 21.4, 21.9)
    signed = await operator.sign(number, "Oscar Operator")
    assert [s.meaning for s in signed.record.signatures] == ["performed"]
    assert signed.verdict == "pass" and len(signed.points) == 3

    # Before approval nothing is corrected.
    async with Client(hub.url, token=hub.tokens["vic"]) as client:
        samples = await client.subscribe("balance").start()
        before = await balance.send(reading(100.0), stable=True)
        sample = await next_sample(samples, balance.seq)
        assert sample.corrected == {} and sample.calibration is None

        # Roles: a viewer and an operator may not approve; the performer never.
        assert (await code_of(viewer.approve(number)))[0] == "forbidden"
        assert (await code_of(operator.approve(number)))[0] == "forbidden"
        approved = await admin.approve(number, "Ada Admin")
        assert approved.approved and approved.correction is not None
        calibration = f"{number}/1"
        assert approved.correction.calibration == calibration

        assert await reason_of(hub, "balance") == ""
        # After approval: corrected beside raw, with the calibration's id.
        await balance.send(reading(100.0), stable=True)
        sample = await next_sample(samples, balance.seq)
        assert sample.values["mass"] == reading(100.0)
        assert sample.calibration == calibration
        assert sample.corrected["mass"] == pytest.approx(100.0, abs=0.0005)
        # A sample taken before the approval (arriving late) is not rewritten.
        await balance.send(reading(100.0), stable=True, ts=before)
        late = await next_sample(samples, balance.seq)
        assert late.corrected == {}

        # The approved record refuses every change.
        assert (await code_of(operator.capture(number, "as_found", 0)))[0] == "record_locked"
        assert (await code_of(operator.adjust(number, "x")))[0] == "record_locked"
        assert (await code_of(operator.reopen(number)))[0] == "record_locked"

        # Withdrawn: from now on raw only.
        assert (await code_of(operator.withdraw(number, "drifted")))[0] == "forbidden"
        withdrawn = await admin.withdraw(number, "balance moved to another bench")
        assert withdrawn.withdrawn_at is not None
        await balance.send(reading(100.0), stable=True)
        sample = await next_sample(samples, balance.seq)
        assert sample.corrected == {} and sample.calibration is None

    # The certificate over HTTP, and its text.
    pdf = await viewer.pdf(number)
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert number in text and "W-SET-1" in text and "Ada Admin" in text
    assert "balance-quick" in text

    # A correction is a new revision pointing to the approved one; approved, it is
    # the correction applied from then on.
    revision = await operator.correct(number, "wrong serial number")
    assert revision.record.revision == 2 and revision.record.supersedes is not None
    assert [r.revision for r in await viewer.revisions(number)] == [1, 2]
    await operator.sign(number, "Oscar Operator")
    second = await admin.approve(number, "Ada Admin")
    assert second.correction is not None and second.correction.calibration == f"{number}/2"
    assert (await viewer.get(number, revision=1)).approved  # the first stays as it was
    versions = [(c.calibration, c.withdrawn_at is not None) for c in await viewer.corrections()]
    assert versions == [(f"{number}/1", True), (f"{number}/2", False)]

    # The log keeps the raw and the corrected values together.
    logged = await fetch_log(
        hub.url, instrument="balance", kind="data", limit=50, token=hub.tokens["ada"]
    )
    assert any(calibration in bytes(e.message).decode() for e in logged)

    # Approval moved the next due date on by the interval: no longer due.
    due = await viewer.due(days=30)
    assert [d.instrument.id for d in due] == []
    due = await viewer.due(days=400)
    assert due[0].next_due == TODAY + datetime.timedelta(days=365)

    # Every step is in the traffic log, with who took it.
    entries = await fetch_log(hub.url, kind="calibration", limit=100, token=hub.tokens["ada"])
    steps = [(e.peer, e.message_object()["action"]) for e in reversed(entries)]
    assert ("oscar", "start") in steps and ("oscar", "sign_performed") in steps
    assert ("ada", "approve") in steps and ("ada", "withdraw") in steps
    assert sum(1 for _, action in steps if action == "capture") == 6
    refused = await fetch_log(hub.url, kind="refused", limit=100, token=hub.tokens["ada"])
    assert any(e.peer == "oscar" and "approve" in e.message_object()["frame"] for e in refused)


async def test_roles_and_an_expired_standard_are_refused_with_codes(
    lab: tuple[Lab, Balance],
) -> None:
    hub, _ = lab
    await register(hub)
    viewer, operator = api(hub, "vic"), api(hub, "oscar")
    assert (await code_of(viewer.start("balance", "balance-quick")))[0] == "forbidden"
    assert (await code_of(operator.register_instrument(BALANCE)))[0] == "forbidden"
    code, message = await code_of(operator.start("balance", "balance-quick", standards=("W-OLD",)))
    assert code == "reference_standard_not_usable" and "cannot be used" in message
    number = (await operator.start("balance", "balance-quick")).record.certificate_number
    assert (await code_of(viewer.approve(number)))[0] == "forbidden"
    assert (await code_of(operator.approve(number)))[0] == "forbidden"
    # An admin may approve, but not what nobody signed as performed.
    assert (await code_of(api(hub, "ada").approve(number)))[0] == "signature_invalid"
    assert (await code_of(operator.start("balance", "no-such-procedure")))[0] == "not_found"
    assert [r.certificate_number for r in await viewer.records("balance")] == [number]
