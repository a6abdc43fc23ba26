"""End to end: `kmz calibration run` at the simulated balance, through a real hub and agent.

The simulator runs here (real pseudo-terminals), so that the test can put
weights on the balance when the CLI asks for them; hub, agent and every
`kmz calibration` command are processes of their own, with tokens of
different roles. Points are captured when the balance reports stable, the
operator signs, a viewer cannot approve, an admin does; the certificate is
downloaded and read, its first page rendered; the correction reaches live
data after the approval and not before.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pypdf import PdfReader

from kleinmaelzung.calibration import Instrument, Laboratory, ReferenceStandard
from kleinmaelzung.client import Client, Sample
from kleinmaelzung.client.calibrations import Calibrations
from kleinmaelzung.hub.auth import Role, SqliteCredentials
from kleinmaelzung.sim import Simulator

from ..e2e.processes import Process, free_port, get_json, wait_until

DOCS = Path(__file__).parents[2] / "docs" / "calibration"

PROCEDURE = """\
name = "balance-linearity"
version = 3
title = "Linearity and repeatability of an electronic balance, 0 g to 200 g"
quantity = "mass"
unit = "g"
method = "Comparison with OIML class F1 weights; readings taken when the balance reports stable."
repetitions = 2
tolerance = { absolute = 0.010 }
fit = { kind = "linear" }
stability = { flag = "stable" }
decision_rule = { kind = "simple" }

[[points]]
nominal = 0.0
apply = "empty pan"

[[points]]
nominal = 50.0
apply = "50 g weight W-050"

[[points]]
nominal = 100.0
apply = "100 g weight W-100"

[[points]]
nominal = 150.0
apply = "100 g + 50 g weights"

[[points]]
nominal = 200.0
apply = "200 g weight W-200"

[[environment]]
name = "air temperature"
unit = "°C"
source = "germ-chamber.temperature"

[[environment]]
name = "relative humidity"
unit = "%rh"
source = "germ-chamber.humidity"
"""
#: The conventional mass of each point's weights, as their certificate states it: the
#: balance (which shows the nominal) reads 4 mg per 100 g low.
REFERENCES = {0.0: "0", 50.0: "50.002", 100.0: "100.004", 150.0: "150.006", 200.0: "200.008"}

TODAY = datetime.datetime.now(datetime.UTC).date()


class Kmz:
    """`kmz calibration ...` processes with one person's token."""

    def __init__(self, url: str, token: str, tmp: Path) -> None:
        self.url, self.token, self.tmp = url, token, tmp

    def env(self) -> dict[str, str]:
        return {**os.environ, "KMZ_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kleinmaelzung.cli", "calibration", *args, "--hub", self.url],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env(),
        )


class Terminal:
    """A process whose stdout is read as it comes, with prompts that end without a newline."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.text = ""

    async def expect(self, wanted: str, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while wanted not in self.text:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no {wanted!r} within {timeout} s; output:\n{self.text}")
            chunk = await asyncio.wait_for(self.proc.stdout.read(4096), left)
            if not chunk:
                raise AssertionError(f"exited before {wanted!r}; output:\n{self.text}")
            self.text += chunk.decode()
        at = self.text.index(wanted) + len(wanted)
        seen, self.text = self.text[:at], self.text[at:]
        return seen

    async def answer(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[tuple[Simulator, str, dict[str, str]]]:
    """Simulated balance and thermo-hygrometer, a hub requiring tokens, an agent."""
    data = tmp_path / "data"
    credentials = SqliteCredentials(data)
    tokens = {}
    for user, role in (("amaier", Role.OPERATOR), ("jkoch", Role.ADMIN), ("vic", Role.VIEWER)):
        credentials.add_user(user, role)
        tokens[user] = credentials.create_token(user=user)[1]
    agent_token = credentials.create_token(
        agent="bench-pi", instruments=("balance", "germ-chamber")
    )[1]
    credentials.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes: list[Process] = []
    with Simulator(["balance", "germ-chamber"], seed=12) as simulator:
        paths = simulator.start()
        balance = simulator.model("balance")
        # No lab assistant putting malt on the pan during a calibration.
        balance._next_change = float("inf")  # type: ignore[attr-defined]
        config = tmp_path / "agent.toml"
        config.write_text(
            f'hub = "{url}"\nagent_id = "bench-pi"\ntoken = "{agent_token}"\n\n'
            "[[instruments]]\n"
            f'id = "balance"\nprofile = "mt-sics-balance"\nport = "{paths["balance"]}"\n'
            "poll_interval_s = 0.1\n\n"
            "[[instruments]]\n"
            f'id = "germ-chamber"\nprofile = "kmz-hygrometer"\nport = "{paths["germ-chamber"]}"\n'
            "poll_interval_s = 0.2\n"
        )
        try:
            hub = Process("hub", ["hub", "--port", str(port), "--data", str(data)], tmp_path)
            processes.append(hub)
            health = f"{url}/api/health"
            wait_until(lambda: get_json(health), "hub health", 15.0, hub)
            agent = Process("agent", ["agent", str(config)], tmp_path)
            processes.append(agent)

            async def online() -> None:
                async with Client(url, token=tokens["vic"]) as client:
                    deadline = time.monotonic() + 20
                    while time.monotonic() < deadline:
                        states = {r.id: r.state for r in await client.instruments()}
                        if states == {"balance": "online", "germ-chamber": "online"}:
                            return
                        await asyncio.sleep(0.1)  # polling a deadline-bounded wait
                raise AssertionError("instruments not online:\n" + agent.output())

            await online()
            yield simulator, url, tokens
        finally:
            for proc in reversed(processes):
                proc.stop()


async def register(url: str, token: str) -> None:
    admin = Calibrations(url, token=token)
    await admin.register_laboratory(
        Laboratory(
            name="Kleinmälzung Versuchslabor",
            address="Malzweg 3, 85354 Freising, Germany",
            accreditation="Example only: not an accredited laboratory",
            contact="labor@kleinmaelzung.example",
        )
    )
    await admin.register_standard(
        ReferenceStandard(
            id="W-F1-SET-07",
            description="Weight set 1 mg to 200 g, OIML R 111 class F1, stainless steel",
            certificate_number="DAkkS D-K-15071-01-00 2026-0412",
            expanded_uncertainty=0.0001,
            k=2.0,
            unit="g",
            traceability="PTB national mass standard via DAkkS-accredited laboratory "
            "D-K-15071-01-00",
            due=TODAY + datetime.timedelta(days=150),
            calibrated_by="Kalibrierlabor Masse GmbH",
        )
    )
    await admin.register_instrument(
        Instrument(
            id="balance",
            description="Precision balance for moisture determination",
            manufacturer="Sartorius",
            model="Quintix 213-1S (simulated)",
            serial_number="0038472915",
            resolution=0.001,
            unit="g",
            location="Lab 1, bench 2",
            channel="mass",
            calibration_interval_days=365,
            next_due=TODAY - datetime.timedelta(days=2),
        )
    )
    await admin.register_procedure(PROCEDURE, source="balance-linearity.toml")


async def live_sample(url: str, token: str, after: float) -> Sample:
    """The balance's next live sample taken after `after`."""
    async with Client(url, token=token) as client, client.subscribe("balance") as samples:
        async for event in samples:
            if isinstance(event, Sample) and event.ts > after:
                return event
    raise AssertionError("the subscription ended")


@pytest.mark.slow
async def test_a_guided_run_at_the_simulated_balance_signed_approved_and_applied(
    bench: tuple[Simulator, str, dict[str, str]], tmp_path: Path
) -> None:
    simulator, url, tokens = bench
    balance = simulator.model("balance")
    await register(url, tokens["jkoch"])
    operator, admin, viewer = (Kmz(url, tokens[u], tmp_path) for u in ("amaier", "jkoch", "vic"))

    # Due before the calibration: it is two days overdue.
    due = viewer.run("due", "--days", "0")
    assert due.returncode == 0 and "balance" in due.stdout and "2 days ago" in due.stdout

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kleinmaelzung.cli",
        "calibration",
        "run",
        "balance",
        "--procedure",
        "balance-linearity",
        "--standard",
        "W-F1-SET-07",
        "--sign",
        "--name",
        "Anna Maier",
        "--hub",
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=operator.env(),
    )
    terminal = Terminal(process)
    try:
        started = await terminal.expect("points")
        number = started.split("Calibration ", 1)[1].split()[0]
        for index, nominal in enumerate(REFERENCES):
            await terminal.expect(f"point {index + 1}/5: {nominal:g} g")
            await terminal.expect("(or type the reference value): ")
            balance.place(nominal, time.monotonic())  # type: ignore[attr-defined]
            await terminal.answer(REFERENCES[nominal])
            # Just placed: settling; then captured twice once stable.
            shown = await terminal.expect("reading 2/2")
            assert "[settling]" in shown and "[stable]" in shown, shown
        await terminal.expect("recorded: ")
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    shown = viewer.run("show", number)
    assert shown.returncode == 0, shown.stderr
    assert "conformity: pass" in shown.stdout, shown.stdout
    assert "signed" in shown.stdout and "performed by Anna Maier (amaier)" in shown.stdout
    assert "air temperature" in shown.stdout and "from germ-chamber.temperature" in shown.stdout
    view = await Calibrations(url, token=tokens["vic"]).get(number)
    readings = [r for p in view.record.as_found for r in p.readings]
    assert len(readings) == 10 and not any(r.manual for r in readings)
    # Every reading was captured when the balance said stable, its samples kept.
    assert all(r.raw[-1].stable and r.raw[-1].value == r.value for r in readings)

    # Not approved yet: live data is raw only.
    balance.place(100.0, time.monotonic())  # type: ignore[attr-defined]
    before = await live_sample(url, tokens["vic"], time.time())
    assert before.corrected == {} and before.calibration is None

    refused = viewer.run("approve", number)
    assert refused.returncode == 1 and "forbidden" in refused.stderr
    refused = operator.run("approve", number)
    assert refused.returncode == 1 and "forbidden" in refused.stderr
    approved = admin.run("approve", number, "--name", "Jonas Koch")
    assert approved.returncode == 0, approved.stderr
    assert f"applied to balance as {number}/1" in approved.stdout

    after = await live_sample(url, tokens["vic"], time.time())
    assert after.calibration == f"{number}/1"
    raw = after.values["mass"]
    assert isinstance(raw, float)
    assert after.corrected["mass"] == pytest.approx(raw + 0.004, abs=0.0015)

    # The approved record refuses changes.
    view = await Calibrations(url, token=tokens["vic"]).get(number)
    assert view.approved
    with pytest.raises(Exception, match="record_locked"):
        await Calibrations(url, token=tokens["amaier"]).adjust(number, "none")

    # The certificate.
    pdf_path = tmp_path / f"{number}.pdf"
    downloaded = viewer.run("pdf", number, "-o", str(pdf_path))
    assert downloaded.returncode == 0, downloaded.stderr
    reader = PdfReader(io.BytesIO(pdf_path.read_bytes()))
    text = "\n".join(page.extract_text() for page in reader.pages)
    for expected in (
        number,
        "Kleinmälzung Versuchslabor",
        "0038472915",
        "W-F1-SET-07",
        "DAkkS D-K-15071-01-00 2026-0412",
        "balance-linearity",
        "Anna Maier",
        "Jonas Koch",
        "Page 1 of",
    ):
        assert expected in text, expected
    # Not due any more: the approval moved the date on by the interval.
    due = viewer.run("due", "--days", "30")
    assert due.returncode == 0 and "nothing due" in due.stdout

    if shutil.which("pdftoppm"):
        page = tmp_path / "page"
        await asyncio.to_thread(
            subprocess.run,
            ["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", str(pdf_path), str(page)],
            check=True,
            timeout=30,
        )
        png = tmp_path / "page-1.png"
        assert png.stat().st_size > 10_000
        if os.environ.get("KMZ_WRITE_SAMPLE"):
            # docs/calibration's sample of this flow (see its README).
            shutil.copy(pdf_path, DOCS / "run-certificate.pdf")
            shutil.copy(png, DOCS / "run-certificate-page1.png")
