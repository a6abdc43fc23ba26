"""`kmz demo` with no set-up: its banner's one-time link opens the dashboard, signed in."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ..e2e.processes import Process, free_port, wait_until
from .conftest import screenshot, wait_for, watched_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DEMO_LAB = ["balance", "bench-dmm", "germ-chamber", "kiln-air", "steep-water"]


def test_the_demo_banner_link_opens_the_lab_signed_in(context: Any, tmp_path: Path) -> None:
    port = free_port()
    demo = Process("demo", ["demo", "--port", str(port), "--data", str(tmp_path / "d")], tmp_path)
    try:
        link = wait_until(
            lambda: (m := re.search(r"dashboard\s+(\S+/login\?code=\S+)", demo.output())) and m[1],
            "the demo's banner",
            30.0,
            demo,
        )
        watched = watched_page(context)
        page = watched.page
        page.goto(link)
        assert page.url == f"http://127.0.0.1:{port}/"  # the code is gone from the address
        wait_for(
            lambda: (
                sorted(
                    page.eval_on_selector_all(
                        '.card[data-state="online"]', "cs => cs.map(c => c.dataset.instrument)"
                    )
                )
                == DEMO_LAB
            ),
            "the demo lab online",
            30.0,
        )
        assert "demo-admin · admin" in page.inner_text("#who")
        wait_for(
            lambda: all(
                text not in ("", "\N{EN DASH}")
                for text in page.eval_on_selector_all(
                    ".card dd .value", "vs => vs.map(v => v.textContent)"
                )
            ),
            "a value in every channel",
        )
        page.mouse.move(0, 0)
        screenshot(page, "dashboard")
        # The link worked once: the next browser is asked for a token.
        fresh = context.browser.new_context()
        try:
            other = watched_page(fresh)
            other.page.goto(link)
            other.page.wait_for_selector("#sign-in-message.error")
        finally:
            fresh.close()
        watched.assert_clean()
    finally:
        demo.stop()
