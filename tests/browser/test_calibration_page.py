"""A calibration run from the dashboard at the simulated balance, through a real hub and agent.

The operator starts the run on the calibration page, is told what to apply
at each point, sees the live reading settle and the indicator turn stable,
captures it (and enters one reading by hand, marked so), reviews the
figures and signs; an admin approves it on the same page, sees it applied
to the live data, and downloads the certificate.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from kleinmaelzung.calibration import Instrument, Laboratory, ReferenceStandard
from kleinmaelzung.client.calibrations import Calibrations
from kleinmaelzung.hub.auth import Role, SqliteCredentials
from kleinmaelzung.sim import Simulator

from ..e2e.processes import Process, free_port, get_json, wait_until
from .conftest import DEADLINE_S, screenshot, wait_for, watched_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROCEDURE = """\
name = "balance-bench"
version = 1
title = "Balance at the bench, two points"
quantity = "mass"
unit = "g"
repetitions = 2
tolerance = { absolute = 0.010 }
fit = { kind = "offset" }
stability = { flag = "stable" }

[[points]]
nominal = 0.0
apply = "empty pan"

[[points]]
nominal = 100.0
apply = "100 g weight W-100"

[[environment]]
name = "air temperature"
unit = "°C"
source = "germ-chamber.temperature"
"""
TODAY = datetime.datetime.now(datetime.UTC).date()


def run_aside(work: Any) -> Any:
    """Run a coroutine on a loop of its own: Playwright's sync API holds this thread's."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


async def register(url: str, token: str) -> None:
    admin = Calibrations(url, token=token)
    await admin.register_laboratory(
        Laboratory(name="Kleinmälzung Versuchslabor", address="Malzweg 3, Freising")
    )
    await admin.register_standard(
        ReferenceStandard(
            id="W-F1-SET-07",
            description="Weight set, OIML class F1",
            certificate_number="D-K-15071-01-00 2026-0412",
            expanded_uncertainty=0.0001,
            k=2.0,
            unit="g",
            traceability="PTB via DAkkS D-K-15071-01-00",
            due=TODAY + datetime.timedelta(days=100),
        )
    )
    await admin.register_instrument(
        Instrument(
            id="balance",
            description="Precision balance",
            manufacturer="Sartorius",
            model="Quintix (simulated)",
            serial_number="0038472915",
            resolution=0.001,
            unit="g",
            channel="mass",
            calibration_interval_days=365,
        )
    )
    await admin.register_procedure(PROCEDURE, source="balance-bench.toml")


@pytest.fixture(scope="module")
def bench(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Simulator, str, dict[str, str]]]:
    """A hub requiring tokens, the simulated balance and thermo-hygrometer, an agent."""
    tmp = tmp_path_factory.mktemp("calibration-bench")
    data = tmp / "data"
    credentials = SqliteCredentials(data)
    tokens = {}
    credentials.add_user("ada", Role.ADMIN)
    credentials.add_user("oscar", Role.OPERATOR, ("balance", "germ-chamber"))
    for user in ("ada", "oscar"):
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
        # No lab assistant putting malt on the pan during a calibration.
        simulator.model("balance")._next_change = float("inf")  # type: ignore[attr-defined]
        config = tmp / "agent.toml"
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
            hub = Process("hub", ["hub", "--port", str(port), "--data", str(data)], tmp)
            processes.append(hub)
            wait_until(lambda: get_json(f"{url}/api/health"), "hub health", DEADLINE_S, hub)
            agent = Process("agent", ["agent", str(config)], tmp)
            processes.append(agent)

            def online() -> bool | None:
                health = get_json(f"{url}/api/health") or {}
                return True if health.get("instruments") == 2 else None

            wait_until(online, "both instruments announced", 30.0, hub, agent)
            run_aside(register(url, tokens["ada"]))
            yield simulator, url, tokens
        finally:
            for proc in reversed(processes):
                proc.stop()


def signed_in_page(browser: Any, url: str, token: str) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    response = context.request.post(
        url + "/api/session", data={"token": token}, headers={"Origin": url}
    )
    assert response.status == 200, response.text()
    return context, watched_page(context)


def text(page: Any, selector: str) -> str:
    return str(page.text_content(selector) or "")


#: What the hub answers a capture that no new sample came for since the point's last reading.
AGAIN = "capture again in a moment"


def capture_until_taken(page: Any) -> None:
    """Capture; refused while no sample came since the point's last reading, capture again.

    What the page tells the operator to do. Clicking the second reading right
    after the first raced the balance's next sample (a run in five failed).
    """
    deadline = time.monotonic() + DEADLINE_S
    while True:
        page.click("#calibration-capture")  # clears the last message at once
        wait_for(
            lambda: moved_on(page) or AGAIN in text(page, "#calibration"),
            "the capture taken or refused",
        )
        if moved_on(page):
            return
        assert time.monotonic() < deadline, "no new sample to capture"


def moved_on(page: Any) -> bool:
    """Whether the step panel left its point's last reading behind."""
    step = text(page, "#calibration-step")
    return "reading 1/2" in step or "readings complete" in step


def test_a_run_from_the_calibration_page_captured_signed_approved_and_downloaded(
    browser: Any, bench: tuple[Simulator, str, dict[str, str]], tmp_path: Path
) -> None:
    simulator, url, tokens = bench
    balance = simulator.model("balance")
    context, watched = signed_in_page(browser, url, tokens["oscar"])
    page = watched.page
    try:
        page.goto(url + "/#/calibration")
        page.wait_for_selector("#calibration-start")
        page.select_option("#calibration-instrument", "balance")
        page.select_option("#calibration-procedure", "balance-bench")
        page.check('input[name="standard"][value="W-F1-SET-07"]')
        page.click('#calibration-start button[type="submit"]')
        page.wait_for_selector("#calibration-step")
        number = f"KMZ-{TODAY.year}-0001"
        assert text(page, "#calibration h1") == f"Calibration {number}/1"

        references = {0.0: "0", 100.0: "100.004"}
        for index, nominal in enumerate(references):
            assert f"point {index + 1}/2" in text(page, "#calibration-point")
            assert ("empty pan" if nominal == 0 else "100 g weight W-100") in text(
                page, "#calibration-apply"
            )
            page.fill("#calibration-reference", references[nominal])
            balance.place(nominal, time.monotonic())  # type: ignore[attr-defined]
            page.click("#calibration-applied")
            # Just placed: the live value settles, the indicator says so; then stable.
            page.wait_for_selector('#calibration-stability:text-is("settling")')
            assert page.is_disabled("#calibration-capture")
            if index == 0:
                screenshot(page, "calibration-run")
            page.wait_for_selector('#calibration-stability:text-is("stable")')
            live = float(text(page, "#calibration-live"))
            assert abs(live - nominal) < 0.01
            page.click("#calibration-capture")
            page.wait_for_selector('#calibration-point:has-text("reading 2/2")')
            if nominal == 0:
                page.wait_for_selector('#calibration-stability:text-is("stable")')
                capture_until_taken(page)
            else:
                # The second reading by hand: marked so on the record and the certificate.
                page.fill("#calibration-manual", "100.001")
                page.fill("#calibration-manual-note", "display flickered")
                page.click("#calibration-enter")
            wait_for(lambda: moved_on(page), "the next step")
        assert "as-found readings complete" in text(page, "#calibration-step")

        # The review: every point with its figures, the hand-entered reading marked,
        # the environment taken live from the thermo-hygrometer.
        rows = page.locator("#calibration-points tbody tr")
        assert rows.count() == 2
        assert "1 (marked)" in rows.nth(1).inner_text()
        assert text(page, "#calibration-verdict") == "result: pass"
        assert "from germ-chamber.temperature" in text(page, "#calibration-environment")
        page.fill("#calibration-sign-name", "Oscar Operator")
        page.click("#calibration-sign")
        page.wait_for_selector('#calibration-state:text-is("signed")')
        assert page.locator("#calibration-approve").count() == 0  # an operator cannot approve
        watched.assert_clean()
    finally:
        context.close()

    context, watched = signed_in_page(browser, url, tokens["ada"])
    page = watched.page
    try:
        page.goto(f"{url}/#/calibration")
        page.wait_for_selector(f'#calibration-table tr[data-number="{number}"] a')
        page.click(f'#calibration-table tr[data-number="{number}"] a')
        page.wait_for_selector("#calibration-approve")
        assert "Performed by Oscar Operator (oscar)" in text(page, "#calibration-actions")
        page.fill("#calibration-approve-name", "Ada Admin")
        page.click("#calibration-approve")
        page.wait_for_selector('#calibration-state:text-is("approved")')
        assert f"as {number}/1" in text(page, "#calibration-applied-as")
        screenshot(page, "calibration-approved", full_page=True)
        with page.expect_download() as download:
            page.click("#calibration-pdf")
        pdf = Path(download.value.path()).read_bytes()
        reader = PdfReader(io.BytesIO(pdf))
        certificate = "\n".join(p.extract_text() for p in reader.pages)
        for expected in (number, "Oscar Operator", "Ada Admin", "W-F1-SET-07", "balance-bench"):
            assert expected in certificate, expected
        watched.assert_clean()
    finally:
        context.close()
