"""Browser tests: Debian's Chromium, driven by Playwright, against a real hub and simulated lab.

The browser is `/usr/bin/chromium` (package ``chromium``; `scripts/setup`
installs it with apt-get where it can). Playwright's own browser download
does not work here, so it is launched by path; `launch()` gives it a new,
empty profile (user-data-dir) each time. Without Chromium or Playwright these
tests fail and say what to install: they are never skipped silently.

The lab: a `kmz hub` process that requires tokens, a `kmz agent` process,
and the simulator's ptys in this process (reached through symlinks, so that
an unplugged instrument can come back on a new tty as USB would).
Screenshots go to ``docs/screenshots/`` (the README shows one).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.hub.auth import Role, SqliteCredentials
from kleinmaelzung.sim import Simulator

from ..e2e.processes import Process, free_port, get_json, wait_until

CHROMIUM = os.environ.get("KMZ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DEADLINE_S = 15.0

#: The demo lab's serial instruments, then thermometers up to 50 instruments in all.
LAB_PROFILES = {
    "steep-water": ("kmz-thermometer", 1.0, "Steeping tank water temperature"),
    "germ-chamber": ("kmz-hygrometer", 1.0, "Germination chamber air"),
    "kiln-air": ("kmz-kiln", 0.2, "Kiln air temperature and setpoint"),
    "balance": ("mt-sics-balance", 0.5, "Balance for moisture determination"),
}
THERMOMETERS = [f"therm-{n:02d}" for n in range(1, 47)]
AGENT_ID = "bench-pi"


def require_browser() -> None:
    """Fail (never skip) with what to install when the browser or Playwright is missing."""
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("Playwright for Python: .venv/bin/pip install -e '.[dev]' (scripts/setup)")
    if not Path(CHROMIUM).exists():
        missing.append(
            f"Chromium at {CHROMIUM}: apt-get install chromium (scripts/setup does, as root)"
        )
    if missing:
        pytest.fail("browser tests need " + "; and ".join(missing), pytrace=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for a module's tests; each test opens its own context.

    Per module, not per session: Playwright's sync API keeps an event loop
    marked running in this thread while it is started, which the asyncio tests
    of the modules after these could not run beside.
    """
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watched:
    """A page and what it reported: console errors, CSP violations, uncaught exceptions."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)

    def violations_now(self) -> list[str]:
        """CSP violations so far, from the console and from the page's own events."""
        reported = self.page.evaluate("() => window.__cspViolations || []")
        return self.violations + [str(v) for v in reported]

    def assert_clean(self, *, statuses: tuple[int, ...] = ()) -> None:
        """No CSP violation, no uncaught exception, no console error (but HTTP `statuses`)."""
        assert not self.violations_now(), self.violations_now()
        assert not self.exceptions, self.exceptions
        allowed = tuple(f"status of {status} " for status in statuses)
        errors = [e for e in self.console_errors if not any(a in e for a in allowed)]
        assert not errors, errors


_WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


def watched_page(context: Any) -> Watched:
    """A new page of `context` whose console, CSP violations and exceptions are recorded."""
    page = context.new_page()
    page.set_default_timeout(DEADLINE_S * 1000)
    watched = Watched(page)
    page.add_init_script(_WATCH_CSP)

    def console(message: Any) -> None:
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            watched.violations.append(text)
        elif message.type == "error":
            watched.console_errors.append(text)

    page.on("console", console)
    page.on("pageerror", lambda error: watched.exceptions.append(str(error)))
    return watched


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies), desktop-sized, that accepts downloads."""
    created = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    try:
        yield created
    finally:
        created.close()


def screenshot(page: Any, name: str, *, full_page: bool = False) -> Path:
    """Save a screenshot into docs/screenshots/ and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


# --- the lab ---------------------------------------------------------------------------


@dataclass
class Lab:
    """A `kmz hub` that requires tokens, 50 simulated instruments and a `kmz agent`.

    The hub and the agent are processes of their own, as in a lab; the simulated
    instruments live in this process (the simulator's thread), so that a test can
    pull one's USB adapter out and plug it back in.
    """

    url: str
    data_dir: Path
    sim: Simulator
    tokens: dict[str, str]
    tty_dir: Path
    hub: Process
    agent: Process
    config: Path

    def stop_agent(self) -> None:
        """Stop the agent as systemd would (SIGTERM): its instruments go offline."""
        self.agent.stop()

    def start_agent(self) -> None:
        """Start the agent again with the same config."""
        self.agent = Process("agent-again", ["agent", str(self.config)], self.config.parent)

    def sign_in(self, context: Any, user: str = "ada") -> None:
        """Give a browser context `user`'s session cookie, as the sign-in form would."""
        response = context.request.post(
            self.url + "/api/session",
            data={"token": self.tokens[user]},
            headers={"Origin": self.url},
        )
        assert response.status == 200, response.text()

    def unplug(self, instrument_id: str) -> None:
        """Pull the instrument's USB adapter out."""
        self.sim.unplug(instrument_id)

    def replug(self, instrument_id: str) -> None:
        """Plug it back in: a new tty, to which its stable name points again."""
        link_tty(self.tty_dir, instrument_id, self.sim.replug(instrument_id))


def link_tty(tty_dir: Path, instrument_id: str, target: str) -> Path:
    """Point `tty_dir/instrument_id` at `target` (as udev does for /dev/serial/by-id)."""
    link = tty_dir / instrument_id
    temporary = tty_dir / f".{instrument_id}.new"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    temporary.replace(link)
    return link


def make_users(data_dir: Path) -> dict[str, str]:
    """ada (admin), olga (operator on kiln-* running only set_setpoint), vic (viewer)."""
    store = SqliteCredentials(data_dir)
    try:
        store.add_user("ada", Role.ADMIN)
        store.add_user("olga", Role.OPERATOR, ("kiln-*",), ("set_setpoint",))
        store.add_user("vic", Role.VIEWER)
        tokens = {user: store.create_token(user=user)[1] for user in ("ada", "olga", "vic")}
        ids = (*LAB_PROFILES, *THERMOMETERS)
        tokens["agent"] = store.create_token(agent=AGENT_ID, instruments=ids)[1]
    finally:
        store.close()
    return tokens


def write_agent_config(path: Path, url: str, token: str, ports: dict[str, Path]) -> Path:
    """The agent's config, as a user would write it."""
    lines = [
        f'hub = "{url}"',
        f'agent_id = "{AGENT_ID}"',
        f'token = "{token}"',
        "",
        "[spool]",
        f'path = "{path.parent / "spool.sqlite"}"',
        "",
    ]
    for instrument_id, port in ports.items():
        profile, poll_s, description = LAB_PROFILES.get(
            instrument_id, ("kmz-thermometer", 1.0, "Bench thermometer")
        )
        lines += [
            "[[instruments]]",
            f'id = "{instrument_id}"',
            f'profile = "{profile}"',
            f'port = "{port}"',
            f"poll_interval_s = {poll_s}",
            f'description = "{description}"',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab for a module's tests; every instrument online before the first."""
    tmp = tmp_path_factory.mktemp("browser-lab")
    data = tmp / "hub-data"
    tokens = make_users(data)
    tty_dir = tmp / "tty"
    tty_dir.mkdir()
    sim = Simulator([*LAB_PROFILES, *THERMOMETERS], seed=5)
    started: list[Process] = []
    try:
        paths = sim.start()
        ports = {i: link_tty(tty_dir, i, path) for i, path in paths.items()}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        hub = Process("hub", ["hub", "--port", str(port), "--data", str(data)], tmp)
        started.append(hub)
        wait_until(lambda: get_json(url + "/api/health"), "hub health", DEADLINE_S, hub)
        config = write_agent_config(tmp / "agent.toml", url, tokens["agent"], ports)
        agent = Process("agent", ["agent", str(config)], tmp)
        started.append(agent)

        def all_online() -> bool | None:
            health = get_json(url + "/api/health") or {}
            return True if health.get("instruments") == len(paths) else None

        wait_until(all_online, "every instrument announced", 30.0, hub, agent)
        lab = Lab(url, data, sim, tokens, tty_dir, hub, agent, config)
        yield lab
    finally:
        for proc in reversed(started):
            proc.stop()
        if "lab" in locals() and lab.agent not in started:
            lab.agent.stop()
        sim.stop()
        shutil.rmtree(tty_dir, ignore_errors=True)


def wait_for(probe: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    """Poll `probe` until true, or fail after `timeout` (a bounded wait, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
