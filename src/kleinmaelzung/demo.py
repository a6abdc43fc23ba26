"""`kmz demo`: a micro-malting lab in one command: hub, simulated instruments, agent.

The lab shows each driver kind that can load here: serial instruments on ptys,
the kiln controller over Modbus TCP (a pymodbus server on loopback), the
germination chamber's sensor over I2C (an SHT3x simulated at register level
inside the agent: `simulated = true`) and a bench multimeter over VISA
(pyvisa-sim). Without the modbus extra the kiln controller falls back to its
serial twin, so the README's `kiln-air` commands still work; so does the
germination chamber if the i2c driver cannot load (it needs no smbus2 to
simulate).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agent import Agent, AgentConfig, AgentError, InstrumentConfig, MissingExtra, load_drivers
from .agent.config import SpoolConfig
from .agent.drivers import find_driver
from .client.credentials import save_token
from .hub import HubConfig, HubStartError, start_hub
from .sim import Simulator

Say = Callable[[str], None]
_log = logging.getLogger(__name__)

#: (instrument id, profile, poll interval in s, description) of the serial instruments.
DEMO_LAB: tuple[tuple[str, str, float, str], ...] = (
    ("steep-water", "kmz-thermometer", 2.0, "Steeping tank water temperature"),
    ("germ-chamber", "kmz-hygrometer", 2.0, "Germination chamber air"),
    ("kiln-air", "kmz-kiln", 0.5, "Kiln air temperature and setpoint"),
    ("balance", "mt-sics-balance", 0.5, "Balance for moisture determination"),
)
KILN = "kiln-air"
GERMINATION = "germ-chamber"
MULTIMETER_ID = "bench-dmm"
#: The Modbus unit id of the simulated kiln controller.
KILN_UNIT = 1
#: The germination chamber's simulated SHT3x: its map's default address, on adapter 1.
GERMINATION_SENSOR: dict[str, Any] = {
    "sensor": "sht3x",
    "address": 0x44,
    "bus": 1,
    "simulated": True,
}
#: The air it measures (as the serial hygrometer's): cool and near saturation.
GERMINATION_AIR_C, GERMINATION_AIR_RH, GERMINATION_NOISE = 16.0, 95.0, 0.05

#: Added to the shipped map `kmz-kiln-modbus`, whose air temperature channel is
#: `air_temperature`: the serial kiln calls it `temperature`, and whoever watches
#: kiln-air should see the same channel whichever driver reads it.
_KILN_ALIASES: list[dict[str, Any]] = [
    {
        "channel": "temperature",
        "kind": "input",
        "address": 0,
        "type": "float32",
        "unit": "°C",
        "description": "Air temperature (process value), as the serial kiln names it",
    }
]


@dataclass(frozen=True)
class DemoInstrument:
    """One instrument of the demo lab as the banner shows it and the agent reads it."""

    config: InstrumentConfig
    #: Where it is: a tty path, host:port, a VISA resource.
    where: str


@dataclass
class DemoPlan:
    """Which driver kinds this installation can show, and what the others would need."""

    modbus: bool = True
    visa: bool = True
    i2c: bool = True
    #: One line per missing piece: what it would add, and how to install it.
    missing: list[str] = field(default_factory=list)


def plan_lab() -> DemoPlan:
    """Probe the optional drivers (and pyvisa-sim) once; a missing one shrinks the lab."""
    plan = DemoPlan()
    try:
        find_driver("modbus")  # its extra also brings the simulator's server side
    except MissingExtra as exc:
        plan.modbus = False
        plan.missing.append(f"the kiln controller over Modbus ({exc.install})")
    try:
        find_driver("i2c")  # simulated, it needs no smbus2: only a broken install stops it
    except MissingExtra as exc:
        plan.i2c = False
        plan.missing.append(f"the germination chamber's sensor over I2C ({exc.install})")
    try:
        find_driver("visa")
        if importlib.util.find_spec("pyvisa_sim") is None:
            raise ModuleNotFoundError("No module named 'pyvisa_sim'", name="pyvisa_sim")
    except MissingExtra as exc:
        plan.visa = False
        plan.missing.append(f"a bench multimeter over VISA ({exc.install} pyvisa-sim)")
    except ModuleNotFoundError:
        plan.visa = False
        plan.missing.append("a bench multimeter over VISA (pip install pyvisa-sim)")
    return plan


def serial_ids(plan: DemoPlan) -> list[str]:
    """The instruments the serial simulator serves: the kiln too if Modbus cannot, and the
    germination chamber if I2C cannot."""
    elsewhere = {KILN: plan.modbus, GERMINATION: plan.i2c}
    return [i for i, *_ in DEMO_LAB if not elsewhere.get(i, False)]


def demo_instruments(
    plan: DemoPlan, paths: dict[str, str], modbus_port: int | None
) -> list[DemoInstrument]:
    """The demo lab: the serial simulator's ttys, the Modbus server's port, the VISA resource."""
    lab: list[DemoInstrument] = []
    for instrument_id, profile, poll_s, description in DEMO_LAB:
        if instrument_id in paths:
            config = InstrumentConfig(
                id=instrument_id,
                profile=profile,
                port=paths[instrument_id],
                poll_interval_s=poll_s,
                description=description,
            )
            lab.append(DemoInstrument(config, paths[instrument_id]))
        elif instrument_id == KILN and modbus_port is not None:
            settings: dict[str, Any] = {
                "transport": "tcp",
                "host": "127.0.0.1",
                "port": modbus_port,
                "unit": KILN_UNIT,
                "map": "kmz-kiln-modbus",
                "registers": _KILN_ALIASES,
            }
            config = InstrumentConfig(
                id=KILN,
                driver="modbus",
                poll_interval_s=poll_s,
                description=description,
                settings=settings,
            )
            lab.append(DemoInstrument(config, f"127.0.0.1:{modbus_port} unit {KILN_UNIT}"))
        elif instrument_id == GERMINATION and plan.i2c:
            config = InstrumentConfig(
                id=GERMINATION,
                driver="i2c",
                bus="i2c-1",
                poll_interval_s=poll_s,
                description=description,
                settings=dict(GERMINATION_SENSOR),
            )
            address = GERMINATION_SENSOR["address"]
            where = f"/dev/i2c-1@0x{address:02X} (simulated SHT3x)"
            lab.append(DemoInstrument(config, where))
    if plan.visa:
        from .sim import visa as sim_visa  # imports no pyvisa

        config = InstrumentConfig(
            id=MULTIMETER_ID,
            driver="visa",
            poll_interval_s=1.0,
            description="Bench multimeter on the kiln's heater supply",
            settings={
                "resource": sim_visa.MULTIMETER,
                "profile": "scpi-dmm",
                "backend": sim_visa.backend(),
            },
        )
        lab.append(DemoInstrument(config, f"{sim_visa.MULTIMETER} (pyvisa-sim)"))
    return lab


#: The demo agent's id.
AGENT_ID = "malthouse-pi-1"
#: The demo's admin, whose token `kmz` on this machine finds in its tokens file.
DEMO_USER = "demo-admin"
#: Labels of the tokens a demo makes; a demo's start revokes the previous demo's.
_DEMO_LABELS = ("kmz demo", "kmz demo agent")


def demo_agent_config(
    hub_url: str, lab: list[DemoInstrument], data_dir: Path | None = None, token: str | None = None
) -> AgentConfig:
    """The demo agent's config for the instruments of `lab`; its spool beside the hub's log."""
    spool = SpoolConfig(path=str(data_dir / "agent-spool.sqlite")) if data_dir else SpoolConfig()
    return AgentConfig(
        hub=hub_url,
        agent_id=AGENT_ID,
        instruments=[i.config for i in lab],
        spool=spool,
        token=token,
    )


def demo_credentials(data_dir: Path) -> tuple[str, str]:
    """Set up the demo hub's auth: return an admin token and the demo agent's token.

    The demo hub requires tokens like any hub with credentials: it shows the
    secure set-up, and a demo started with ``--host 0.0.0.0`` is not open to
    the network. The tokens of the previous demo in this folder are revoked.
    """
    from .hub.auth import CredentialsError, Role, SqliteCredentials

    store = SqliteCredentials(data_dir)
    try:
        if DEMO_USER not in {u.name for u in store.users()}:
            store.add_user(DEMO_USER, Role.ADMIN)
        for old in store.tokens():
            if old.label in _DEMO_LABELS and old.revoked is None:
                store.revoke_token(old.id)
        _, admin = store.create_token(user=DEMO_USER, label=_DEMO_LABELS[0])
        ids = (*(i for i, *_ in DEMO_LAB), MULTIMETER_ID)
        _, agent = store.create_token(agent=AGENT_ID, instruments=ids, label=_DEMO_LABELS[1])
    except CredentialsError as exc:
        raise HubStartError(f"cannot set up the demo's credentials: {exc}") from None
    finally:
        store.close()
    return admin, agent


def set_germination_air(agent: Agent) -> None:
    """Give the simulated SHT3x, which lives in the agent's I2C driver, the chamber's air."""
    runner = agent.runners.get(GERMINATION)
    if runner is None:
        return
    from .agent.drivers.i2c import I2cDriver  # loaded already: the agent uses it
    from .sim import i2c as sim_i2c

    driver = runner.driver
    if not isinstance(driver, I2cDriver) or driver.simulator is None:
        return  # the serial twin: its simulator has its own air
    sensor = driver.simulator.devices[GERMINATION_SENSOR["address"]]
    if isinstance(sensor, sim_i2c.Sht3x):
        sensor.temperature_c, sensor.humidity = GERMINATION_AIR_C, GERMINATION_AIR_RH
        sensor.noise = GERMINATION_NOISE


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


def _banner(
    url: str, data_dir: Path, lab: list[DemoInstrument], tokens: Path, login: str | None = None
) -> str:
    kmz = _kmz_command()
    hub_flag = "" if url == "http://127.0.0.1:8765" else f" --hub {url}"
    # The one-time link signs the browser in as the demo's admin (like Jupyter's token URL).
    dashboard = f"{url}/login?code={login}" if login else url
    lines = [
        "Kleinmaelzung demo: a micro-malting lab",
        f"  hub        {url}",
        f"  dashboard  {dashboard}   (open it in a browser; the link signs you in once)",
        f"  data       {data_dir / 'traffic.sqlite3'}",
        f"  token      admin {DEMO_USER!r}, saved for kmz on this machine in {tokens}",
        "  instruments (simulated): id, driver, where",
        *(f"    {i.config.id:<13} {i.config.driver:<12} {i.where}" for i in lab),
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
    plan = plan_lab()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        admin_token, agent_token = demo_credentials(data_dir)
        hub = await start_hub(HubConfig(host=host, port=port, data_dir=data_dir))
    except HubStartError as exc:
        complain(f"kmz demo: {exc}")
        return 1
    try:
        async with contextlib.AsyncExitStack() as resources:
            simulator = resources.enter_context(Simulator(serial_ids(plan)))
            modbus_port: int | None = None
            if plan.modbus:
                from .sim.modbus import KilnModbusServer  # imports pymodbus

                # Port 0: the server binds a free port itself, so two demos never race for one.
                kiln = KilnModbusServer(units=(KILN_UNIT,), host="127.0.0.1", port=0)
                try:
                    await resources.enter_async_context(kiln)
                except OSError as exc:
                    complain(f"kmz demo: the simulated Modbus kiln cannot listen: {exc}")
                    return 1
                modbus_port = kiln.port
            lab = demo_instruments(plan, simulator.paths, modbus_port)
            try:
                # Built before the banner, so a config the agent refuses never gets one.
                agent = Agent(demo_agent_config(hub.url, lab, data_dir, agent_token))
            except AgentError as exc:
                complain(f"kmz demo: the agent cannot start: {exc}")
                return 1
            set_germination_air(agent)
            if plan.missing:
                twins = [i for i, ok in ((KILN, plan.modbus), (GERMINATION, plan.i2c)) if not ok]
                complain(
                    "kmz demo: running without "
                    + "; without ".join(plan.missing)
                    + ". The serial instruments run as usual"
                    + (f", {' and '.join(twins)} among them" if twins else "")
                    + "."
                )
            tokens = save_token(hub.url, admin_token)
            login = hub.hub.auth.login_code(admin_token)
            say(_banner(hub.url, data_dir, lab, tokens, login))
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
