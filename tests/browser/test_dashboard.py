"""The dashboard in a real browser against a real hub: what a lab technician sees and does."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import LAB_PROFILES, THERMOMETERS, Lab, screenshot, wait_for, watched_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ALL = sorted([*LAB_PROFILES, *THERMOMETERS])
ROWS = "#log-table tbody tr[data-type]"
#: Bytes received for the page and everything it loaded (headers and compressed bodies).
TRANSFERRED = (
    "() => performance.getEntriesByType('navigation')"
    ".concat(performance.getEntriesByType('resource'))"
    ".reduce((n, e) => n + (e.transferSize || 0), 0)"
)


def card_count(page: Any) -> int:
    return int(page.evaluate("() => document.querySelectorAll('.card').length"))


def signed_in(context: Any, lab: Lab, user: str = "ada") -> Any:
    """A page of `user`'s, signed in, on the overview with its cards shown."""
    lab.sign_in(context, user)
    watched = watched_page(context)
    watched.page.goto(lab.url + "/")
    watched.page.wait_for_selector(".card")
    return watched


def card_value(page: Any, instrument: str, channel: str) -> str:
    return str(
        page.text_content(
            f'.card[data-instrument="{instrument}"] dd[data-channel="{channel}"] .value'
        )
    )


def test_the_overview_shows_every_instrument_live(context: Any, lab: Lab) -> None:
    watched = signed_in(context, lab)
    page = watched.page
    wait_for(lambda: card_count(page) == len(ALL), "every card")
    ids = page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.instrument)")
    assert sorted(ids) == ALL
    assert page.text_content("#overview-group option:checked") == "by agent"
    assert "Agent bench-pi" in page.inner_text(".group h2")
    # Values arrive and change; units beside them.
    wait_for(
        lambda: card_value(page, "kiln-air", "temperature") not in ("\N{EN DASH}", ""),
        "a kiln value",
    )
    first = card_value(page, "kiln-air", "temperature")
    wait_for(lambda: card_value(page, "kiln-air", "temperature") != first, "the kiln value to move")
    unit = page.text_content(
        '.card[data-instrument="kiln-air"] dd[data-channel="temperature"] .unit'
    )
    assert unit == "°C"
    assert page.get_attribute('.card[data-instrument="kiln-air"]', "data-state") == "online"
    assert "last seen" in page.inner_text('.card[data-instrument="kiln-air"] .meta')
    # The text filter.
    page.fill("#overview-filter", "kiln")
    assert page.eval_on_selector_all(".card", "cs => cs.filter(c => c.offsetParent).length") == 1
    page.fill("#overview-filter", "")
    # Groups of one's own, kept in the browser.
    page.select_option("#overview-group", "mine")
    page.fill("#overview-my-groups", "Kiln: kiln-*; Malting: steep-* germ-* balance")
    headings = page.eval_on_selector_all(".group h2", "hs => hs.map(h => h.textContent)")
    assert headings == ["Kiln", "Malting", "other"]
    assert page.locator(".group:first-child .card").count() == 1
    page.reload()
    page.wait_for_selector(".card")
    page.select_option("#overview-group", "mine")
    assert page.input_value("#overview-my-groups").startswith("Kiln: kiln-*")
    page.select_option("#overview-group", "agent")
    screenshot(page, "overview")
    watched.assert_clean()


def first_load(browser: Any, lab: Lab) -> tuple[Any, dict[str, int], int]:
    """A fresh browser (nothing cached) opening the overview: its page, marks and bytes."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    lab.sign_in(context)
    watched = watched_page(context)
    page = watched.page
    page.goto(lab.url + "/")
    wait_for(lambda: card_count(page) == len(ALL), "every card")
    # Milliseconds from navigation start, as the browser measured them (the app marks
    # when the session was known, the list came, the cards were painted).
    marks = page.evaluate(
        "() => Object.fromEntries(performance.getEntriesByType('mark')"
        ".map(m => [m.name, Math.round(m.startTime)]))"
    )
    return watched, marks, int(page.evaluate(TRANSFERRED))


def test_the_first_paint_of_50_instruments_takes_under_a_second(browser: Any, lab: Lab) -> None:
    # Best of three fresh loads: the 2-core machine is shared with the hub, the agent,
    # 50 simulated instruments and the tests themselves, and one load can be unlucky.
    painted = []
    for _ in range(3):
        watched, marks, transferred = first_load(browser, lab)
        print(f"\nfirst load: {transferred} bytes; marks (ms): {marks}")
        painted.append(marks["kmz:overview-painted"])
        assert transferred < 40_000  # uPlot is not part of it: it loads with the plots page
        if painted[-1] < 1000:
            break
        watched.page.context.close()
    assert min(painted) < 1000, painted
    page = watched.page
    page.click("#nav >> text=Plots")
    page.wait_for_selector("#plot p.hint")  # uPlot loaded, no channel chosen yet
    print(f"the plots page adds {page.evaluate(TRANSFERRED) - transferred} bytes (uPlot)")
    watched.assert_clean()
    page.context.close()


def test_a_plot_receives_points_and_downloads_csv_and_png(context: Any, lab: Lab) -> None:
    watched = signed_in(context, lab)
    page = watched.page
    page.click('.card[data-instrument="kiln-air"] >> text=Plot')
    page.wait_for_selector("#plot canvas")
    assert page.is_checked('input[data-series="kiln-air.temperature"]')
    page.uncheck('input[data-series="kiln-air.output"]')  # a percentage, on a scale of its own
    page.check('input[data-series="steep-water.temperature"]')  # a second instrument
    page.wait_for_selector("#plot canvas")

    def points() -> int:
        return int(page.get_attribute("#plot-status", "data-points") or 0)

    before = points()
    wait_for(lambda: points() > before + 5, "points to arrive on the plot")
    legend = page.inner_text("#plot .u-legend")
    assert "kiln-air.temperature [°C]" in legend and "steep-water.temperature [°C]" in legend
    # Back into history: the hub's history API answers (no note that it is missing).
    page.click("text=Zoom out")
    wait_for(lambda: "inspecting" in page.inner_text("#plot-status"), "a range of one's own")
    assert "history" not in page.inner_text("#plot-status"), page.inner_text("#plot-status")
    page.click("#plot-live")
    page.click("#plot-pause")
    assert "paused" in page.inner_text("#plot-status")
    with page.expect_download() as csv_download:
        page.click("#plot-csv")
    csv_path = csv_download.value.path()
    rows = Path(csv_path).read_text(encoding="utf-8").splitlines()
    assert rows[0] == (
        "time,unix_s,kiln-air.setpoint [°C],kiln-air.temperature [°C],steep-water.temperature [°C]"
    )
    assert len(rows) > 3 and re.match(r"\d{4}-\d\d-\d\dT", rows[1])
    with page.expect_download() as png_download:
        page.click("#plot-png")
    png = Path(png_download.value.path()).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    page.click("#plot-pause")
    assert "live" in page.inner_text("#plot-status")
    screenshot(page, "plots")
    watched.assert_clean()


def test_a_command_from_the_page_reaches_the_instrument_and_its_reply_shows(
    context: Any, lab: Lab
) -> None:
    watched = signed_in(context, lab)
    page = watched.page
    page.goto(lab.url + "/#/drive/kiln-air")
    form = 'form[data-command="set_setpoint"]'
    page.wait_for_selector(form)
    field = page.locator(f"{form} input[name=value]")
    assert (field.get_attribute("min"), field.get_attribute("max")) == ("0", "250")
    field.fill("900")  # out of range: the browser says so, nothing is sent
    page.click(f"{form} button[type=submit]")
    assert not page.is_visible(f"{form} .confirm")
    field.fill("77.5")
    page.click(f"{form} button[type=submit]")
    page.click(f"{form} .confirm button.danger")  # setting a kiln is confirmed first
    page.wait_for_selector(f"{form} .outcome.ok")
    assert "77.5" in page.inner_text(f"{form} .outcome")
    kiln = lab.sim.model("kiln-air")
    assert kiln.sp == 77.5  # type: ignore[attr-defined]
    # A read needs no confirmation; its reply shows inline.
    page.click('form[data-command="get_setpoint"] button[type=submit]')
    page.wait_for_selector('form[data-command="get_setpoint"] .outcome.ok')
    assert "77.5" in page.inner_text('form[data-command="get_setpoint"] .outcome')
    screenshot(page, "drive")
    watched.assert_clean()


def test_an_error_shows_inline_where_the_command_was_sent(context: Any, lab: Lab) -> None:
    ada = signed_in(context, lab)
    page = ada.page
    page.goto(lab.url + "/#/drive/kiln-air")
    lease = 'form[data-command="lease"]'
    page.fill(f"{lease} input[name=duration_s]", "60")
    page.click(f"{lease} button[type=submit]")
    page.click(f"{lease} .confirm button.danger")
    page.wait_for_selector(f"{lease} .outcome.ok")
    assert "holder=ada" in page.inner_text(f"{lease} .outcome")
    wait_for(lambda: "leased by ada" in page.inner_text(".drive-head"), "the lease shown")
    other = context.browser.new_context()
    try:
        olga = signed_in(other, lab, "olga")
        opage = olga.page
        opage.goto(lab.url + "/#/drive/kiln-air")
        form = 'form[data-command="set_setpoint"]'
        opage.fill(f"{form} input[name=value]", "70")
        opage.click(f"{form} button[type=submit]")
        opage.click(f"{form} .confirm button.danger")
        opage.wait_for_selector(f"{form} .outcome.failed")
        assert "lease_held" in opage.inner_text(f"{form} .outcome")
        assert "leased by ada" in opage.inner_text(f"{form} .outcome")
        olga.assert_clean()
    finally:
        other.close()
        page.click('form[data-command="release"] button[type=submit]')
        page.click('form[data-command="release"] .confirm button.danger')
        page.wait_for_selector('form[data-command="release"] .outcome.ok')
    ada.assert_clean()


def test_commands_the_user_may_not_send_are_not_offered(context: Any, lab: Lab) -> None:
    watched = signed_in(context, lab, "olga")  # operator on kiln-*, set_setpoint only
    page = watched.page
    assert "olga · operator" in page.inner_text("#who")
    assert page.locator('.card[data-instrument="kiln-air"] >> text=Drive').count() == 1
    assert page.locator('.card[data-instrument="kiln-air"]').count() == 1
    assert page.locator(".card").count() == 1  # she may watch kiln-* only
    page.goto(lab.url + "/#/drive/kiln-air")
    page.wait_for_selector('form[data-command="set_setpoint"]')
    offered = page.eval_on_selector_all(
        "form[data-command]", "fs => fs.map(f => f.dataset.command)"
    )
    assert offered == ["set_setpoint", "lease", "release"]
    watched.page.close()
    viewer = signed_in(context.browser.new_context(), lab, "vic")
    vpage = viewer.page
    assert vpage.locator(".card >> text=Drive").count() == 0
    vpage.goto(lab.url + "/#/drive/kiln-air")
    vpage.wait_for_selector("text=may watch, not drive")
    assert vpage.locator("form[data-command]").count() == 0
    viewer.assert_clean()
    vpage.context.close()


def test_an_unplugged_instrument_turns_faulted_on_its_card_and_back(context: Any, lab: Lab) -> None:
    watched = signed_in(context, lab)
    page = watched.page
    card = '.card[data-instrument="balance"]'
    assert page.get_attribute(card, "data-state") == "online"
    lab.unplug("balance")
    try:
        page.wait_for_selector(f'{card}[data-state="faulted"]')
        assert "faulted" in page.inner_text(f"{card} .badge")
        # The agent's reason, for people.
        page.wait_for_selector(f"{card} .reason:not([hidden])")
        assert "balance" in page.inner_text(f"{card} .reason")
        screenshot(page, "overview-faulted")
    finally:
        lab.replug("balance")
    page.wait_for_selector(f'{card}[data-state="online"]', timeout=20_000)
    assert "online for" in page.inner_text(f"{card} .meta")
    watched.assert_clean()


def test_instruments_go_offline_with_their_agent_and_come_back(context: Any, lab: Lab) -> None:
    watched = signed_in(context, lab)
    page = watched.page
    card = '.card[data-instrument="kiln-air"]'
    lab.stop_agent()
    try:
        page.wait_for_selector(f'{card}[data-state="offline"]')
        wait_for(lambda: "offline for" in page.inner_text(f"{card} .meta"), "since when")
        assert "agent disconnected" in page.inner_text(f"{card} .reason")
        offline = page.eval_on_selector_all(
            '.card[data-state="offline"]', "cs => cs.map(c => c.dataset.instrument)"
        )
        assert sorted(offline) == ALL  # every instrument of that agent
        page.select_option("#overview-group", "state")
        screenshot(page, "overview-offline")
        page.select_option("#overview-group", "agent")
    finally:
        lab.start_agent()
    page.wait_for_selector(f'{card}[data-state="online"]', timeout=30_000)
    wait_for(
        lambda: page.eval_on_selector_all(
            ".card", "cs => cs.every(c => c.dataset.state === 'online')"
        ),
        "every instrument back online",
        30.0,
    )
    watched.assert_clean()


def test_the_log_view_filters_and_tails(context: Any, lab: Lab) -> None:
    watched = signed_in(context, lab)
    page = watched.page
    page.goto(lab.url + "/#/log")
    page.wait_for_selector("#log-table tbody tr[data-type]")
    page.select_option("#log-kind", "command")
    wait_for(
        lambda: (
            set(page.eval_on_selector_all(ROWS, "rs => rs.map(r => r.dataset.type)"))
            <= {"command", "reply"}
        ),
        "only commands and replies",
    )
    page.select_option("#log-kind", "")
    page.select_option("#log-instrument", "kiln-air")
    assert page.url.endswith("#/log/kiln-air")
    wait_for(
        lambda: (
            set(page.eval_on_selector_all(ROWS, "rs => rs.map(r => r.children[3].textContent)"))
            == {"kiln-air"}
        ),
        "only kiln-air's entries",
    )
    page.fill("#log-filter", "setpoint")
    texts = page.eval_on_selector_all(
        "#log-table tbody tr[data-type]", "rows => rows.map(r => r.textContent)"
    )
    assert texts and all("setpoint" in t for t in texts)
    # Live tail: new entries come in without a reload.
    page.fill("#log-filter", "")
    newest = int(page.get_attribute("#log-table tbody tr[data-type]", "data-id") or 0)
    wait_for(
        lambda: int(page.get_attribute("#log-table tbody tr[data-type]", "data-id") or 0) > newest,
        "a newer log entry",
    )
    screenshot(page, "log")
    watched.assert_clean()


def test_the_agents_page_lists_the_agent(context: Any, lab: Lab) -> None:
    watched = signed_in(context, lab)
    page = watched.page
    page.goto(lab.url + "/#/agents")
    page.wait_for_selector('#agents-table tr[data-agent="bench-pi"]')
    row = page.inner_text('#agents-table tr[data-agent="bench-pi"]')
    assert "kiln-air" in row and "therm-46" in row
    # The fleet view's columns (issue 17): state, and the configuration it runs.
    wait_for(
        lambda: (
            "its own file; accepts remote"
            in page.inner_text('#agents-table tr[data-agent="bench-pi"]')
            or None
        ),
        "the agent's configuration revision",
    )
    assert "online" in page.inner_text('#agents-table tr[data-agent="bench-pi"]')
    page.goto(lab.url + "/#/calibration")
    # Nothing registered for calibration here: no record, and what a run needs first.
    page.wait_for_selector("#calibration p.hint")
    screenshot(page, "agents-calibration")
    watched.assert_clean()


def test_sign_in_with_a_token_then_out(context: Any, lab: Lab) -> None:
    watched = watched_page(context)
    page = watched.page
    response = page.goto(lab.url + "/")
    headers = response.headers
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    page.wait_for_selector("#sign-in:not([hidden])")
    page.fill("#token", "kmz_000000000000_wrong")
    page.click("#sign-in-form button")
    page.wait_for_selector("#sign-in-message.error")
    screenshot(page, "sign-in")
    page.fill("#token", lab.tokens["ada"])
    page.click("#sign-in-form button")
    page.wait_for_selector(".card")
    (cookie,) = [c for c in context.cookies() if c["name"] == "kmz_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain http here; Secure when the hub serves TLS
    assert page.evaluate("() => document.cookie") == ""  # out of the page's reach
    page.click("#sign-out")
    page.wait_for_selector("#sign-in:not([hidden])")
    assert page.inner_text("#sign-in-message") == "Signed out."
    # The old cookie is worth nothing now.
    status = page.evaluate("async () => (await fetch('/api/session')).status")
    assert status == 401
    # The page asked who is signed in while nobody was, and a wrong token was refused.
    watched.assert_clean(statuses=(401,))


def test_a_revoked_token_ends_the_pages_session(context: Any, lab: Lab) -> None:
    from kleinmaelzung.hub.auth import SqliteCredentials

    store = SqliteCredentials(lab.data_dir)
    try:
        _, token = store.create_token(user="vic", label="to revoke")
        token_id = token.split("_")[1]
        watched = watched_page(context)
        page = watched.page
        page.goto(lab.url + "/")
        page.fill("#token", token)
        page.click("#sign-in-form button")
        page.wait_for_selector(".card")
        revoked_at = time.monotonic()
        store.revoke_token(token_id)
        page.wait_for_selector("#sign-in:not([hidden])", timeout=5000)
        assert time.monotonic() - revoked_at < 3.0
        assert "session has ended" in page.inner_text("#sign-in-message")
    finally:
        store.close()


def test_phone_and_dark_screens(browser: Any, lab: Lab) -> None:
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, color_scheme="dark"
    )
    try:
        watched = signed_in(phone, lab)
        page = watched.page
        wide = page.evaluate("() => document.documentElement.scrollWidth")
        assert wide <= 390  # nothing wider than the phone
        background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(18, 18, 18)"
        screenshot(page, "overview-phone-dark")
        # Keyboard: Tab reaches the navigation, Enter follows a link.
        focused = []
        for _ in range(4):
            page.keyboard.press("Tab")
            focused.append(page.evaluate("() => document.activeElement.textContent.trim()"))
        assert focused == ["Skip to content", "Kleinmaelzung", "Overview", "Plots"]
        page.keyboard.press("Enter")
        page.wait_for_selector("#view-plots:not([hidden])")
        for view, ready in [
            ("plots/kiln-air", "#plot canvas"),
            ("drive/kiln-air", 'form[data-command="set_setpoint"]'),
            ("log/kiln-air", ROWS),
        ]:
            page.goto(f"{lab.url}/#/{view}")
            page.wait_for_selector(ready)
            wide = page.evaluate("() => document.documentElement.scrollWidth")
            assert wide <= 390, view
            screenshot(page, f"{view.split('/')[0]}-phone-dark")
        watched.assert_clean()
    finally:
        phone.close()
