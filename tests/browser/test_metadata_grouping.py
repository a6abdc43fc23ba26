"""The dashboard groups instruments by the location and group an admin set at the hub."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from .conftest import LAB_PROFILES, THERMOMETERS, Lab, wait_for, watched_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ALL = sorted([*LAB_PROFILES, *THERMOMETERS])


def kmz(lab: Lab, *args: str, user: str = "ada") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kleinmaelzung.cli", *args, "--hub", lab.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "KMZ_TOKEN": lab.tokens[user]},
    )


def headings(page: Any) -> list[str]:
    return list(page.eval_on_selector_all(".group h2", "hs => hs.map(h => h.textContent)"))


def group_of(page: Any, heading: str) -> list[str]:
    return sorted(
        page.eval_on_selector_all(
            ".group",
            "(gs, heading) => gs.filter(g => g.querySelector('h2')?.textContent === heading)"
            ".flatMap(g => [...g.querySelectorAll('.card')].map(c => c.dataset.instrument))",
            heading,
        )
    )


def test_the_overview_groups_by_location_and_group(context: Any, lab: Lab) -> None:
    for instrument, location, group in (
        ("kiln-air", "Kiln house", "Kilning"),
        ("steep-water", "Malting room", "Steeping"),
        ("germ-chamber", "Malting room", "Germination"),
    ):
        done = kmz(
            lab,
            "instrument-meta",
            "set",
            instrument,
            "--location",
            location,
            "--group",
            group,
            "--owner",
            "ada",
        )
        assert done.returncode == 0, done.stderr
    lab.sign_in(context, "vic")  # a viewer sees it: it is in every record
    watched = watched_page(context)
    page = watched.page
    page.goto(lab.url + "/")
    wait_for(lambda: page.locator(".card").count() == len(ALL), "every card")

    page.select_option("#overview-group", "location")
    assert headings(page) == ["Kiln house", "Malting room", "no location"]
    assert group_of(page, "Malting room") == ["germ-chamber", "steep-water"]
    assert group_of(page, "Kiln house") == ["kiln-air"]
    assert len(group_of(page, "no location")) == len(ALL) - 3
    page.select_option("#overview-group", "group")
    assert headings(page) == ["Germination", "Kilning", "Steeping", "no group"]
    # The card says where it is and who looks after it; the filter finds it by that.
    place = page.inner_text('.card[data-instrument="kiln-air"] .place')
    assert place == "Kiln house \N{MIDDLE DOT} Kilning \N{MIDDLE DOT} owner ada"
    assert page.is_hidden('.card[data-instrument="therm-01"] .place')
    page.fill("#overview-filter", "malting room")
    assert page.eval_on_selector_all(".card", "cs => cs.filter(c => c.offsetParent).length") == 2
    watched.assert_clean()
