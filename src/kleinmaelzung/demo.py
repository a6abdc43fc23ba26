"""`kmz demo`: a micro-malting lab in one command: hub, simulated instruments on ptys, agent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from .agent import Agent, AgentConfig, AgentError, InstrumentConfig, MissingExtra, load_drivers
from .hub import HubConfig, HubStartError, start_hub
from .sim import Simulator

Say = Callable[[str], None]
_log = logging.getLogger(__name__)

#: (instrument id, profile, poll interval in s, description) of the demo lab.
DEMO_LAB: tuple[tuple[str, str, float, str], ...] = (
    ("steep-water", "kmz-thermometer", 2.0, "Steeping tank water temperature"),
    ("germ-chamber", "kmz-hygrometer", 2.0, "Germination chamber air"),
    ("kiln-air", "kmz-kiln", 0.5, "Kiln air temperature and setpoint"),
    ("balance", "mt-sics-balance", 0.5, "Balance for moisture determination"),
)


def demo_agent_config(hub_url: str, paths: dict[str, str]) -> AgentConfig:
    """The demo agent's config, wired to the simulator's tty paths."""
    return AgentConfig(
        hub=hub_url,
        agent_id="malthouse-pi-1",
        instruments=[
            InstrumentConfig(
                id=instrument_id,
                profile=profile,
                port=paths[instrument_id],
                poll_interval_s=poll_s,
                description=description,
            )
            for instrument_id, profile, poll_s, description in DEMO_LAB
        ],
    )


def _kmz_command() -> str:
    """How the user should type `kmz` in another terminal."""
    ours = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    found = shutil.which("kmz")
    if ours is not None and found is not None and Path(found).resolve() == ours:
        return "kmz"
    candidate = Path(sys.executable).parent / "kmz"
    if candidate.exists():
        with contextlib.suppress(ValueError):
            return str(candidate.relative_to(Path.cwd()))
        return str(candidate)
    return "kmz"


def _banner(url: str, data_dir: Path, paths: dict[str, str]) -> str:
    kmz = _kmz_command()
    hub_flag = "" if url == "http://127.0.0.1:8765" else f" --hub {url}"
    lines = [
        "Kleinmaelzung demo: a micro-malting lab",
        f"  hub        {url}   (open it in a browser)",
        f"  data       {data_dir / 'traffic.sqlite3'}",
        "  instruments (simulated, on pseudo-terminals):",
        *(f"    {i:<13} {paths[i]}" for i, *_ in DEMO_LAB),
        "",
        "Try, in another terminal:",
        f"  {kmz} instruments{hub_flag}",
        f"  {kmz} watch kiln-air --count 5 --json{hub_flag}",
        f"  {kmz} send balance tare{hub_flag}",
        f"  {kmz} send kiln-air set_setpoint value=80{hub_flag}",
        f"  {kmz} log --limit 10{hub_flag}",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


class _AgentEnded(Exception):
    """The demo's agent returned although nobody asked it to stop."""


async def _serve_agent(agent: Agent, stop: asyncio.Event) -> None:
    await agent.run(stop)
    if not stop.is_set():
        raise _AgentEnded("the agent ended by itself")


def _reasons(group: ExceptionGroup[Exception]) -> str:
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return "; ".join(f"{type(exc).__name__}: {exc}" for exc in leaves)


async def _run(host: str, port: int, data_dir: Path, say: Say, complain: Say) -> int:
    try:
        # Before the hub and the banner: without its agent the demo must not look healthy.
        load_drivers(["serial_line"])
    except MissingExtra as exc:
        complain(f"kmz demo {exc}")
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        hub = await start_hub(HubConfig(host=host, port=port, data_dir=data_dir))
    except HubStartError as exc:
        complain(f"kmz demo: {exc}")
        return 1
    try:
        with Simulator() as simulator:
            try:
                # Built before the banner, so a config the agent refuses never gets one.
                agent = Agent(demo_agent_config(hub.url, simulator.paths))
            except AgentError as exc:
                complain(f"kmz demo: the agent cannot start: {exc}")
                return 1
            say(_banner(hub.url, data_dir, simulator.paths))
            try:
                # The demo lives as long as its agent: if the agent's task fails,
                # the group cancels the wait below and the demo ends with the reason.
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(_serve_agent(agent, stop), name="kmz-demo-agent")
                    await stop.wait()
                    complain("stopping ...")
            except ExceptionGroup as group:
                _log.debug("demo agent failed", exc_info=group)
                complain(f"kmz demo: the agent stopped, so the demo stops: {_reasons(group)}")
                return 1
    finally:
        await hub.stop()
    return 0


def run_demo(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    data_dir: Path | None = None,
    say: Say = _log.info,
    complain: Say = _log.warning,
) -> int:
    """Run the demo in the foreground until Ctrl-C; return the exit status."""
    data_dir = data_dir or Path(os.environ.get("KMZ_DATA", "kmz-data"))
    return asyncio.run(_run(host, port, data_dir, say, complain))
