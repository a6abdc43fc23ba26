"""Benchmark the hub against Mosquitto-WS and NATS-WS in the same run, and the agent's footprint.

    python benchmarks/run.py [--quick] [--json FILE] [--scenarios S1,S2] [--servers hub,nats]

Each scenario runs against a fresh server pinned to CPU 0, with the load
generator pinned to CPU 1. Figures vary by +-30 % between runs on shared
machines: compare within one run, which is what the ratio column does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import servers  # noqa: E402


@dataclass(frozen=True)
class Scenario:
    """One load shape."""

    name: str
    pubs: int
    subs: int
    rate: float  # frames per second per publisher; 0 = max
    what: str


SCENARIOS = {
    "S1": Scenario("S1", 10, 10, 0, "10 publishers -> 10 subscribers of all, max rate"),
    "S2": Scenario("S2", 200, 5, 10, "200 publishers x 10/s -> 5 subscribers (latency)"),
    "S2x": Scenario("S2x", 200, 5, 50, "S2 at 5x the rate: 50,000 deliveries/s"),
    "S3": Scenario("S3", 1, 1, 0, "1 publisher -> 1 subscriber, max rate"),
    "C5000": Scenario("C5000", 1, 5000, 0, "5,000 idle subscribers, one instrument each"),
    "AGENT": Scenario("AGENT", 20, 0, 10, "agent with 20 instruments at 10 Hz"),
    "AGENTMIX": Scenario("AGENTMIX", 20, 0, 10, "agent with 20 instruments of mixed drivers"),
}
#: AGENTMIX's instruments by driver: serial line thermometers on ptys, kiln
#: controllers on one simulated Modbus TCP server, simulated I2C sensors.
MIX = {"serial_line": 8, "modbus": 6, "i2c": 6}
#: Samples per frame in the batched variant of the hub.
BATCH = 20
TARGETS = {
    ("S1", "deliveries_per_s"): "hub >= mosquitto",
    ("S1", "samples_per_s"): "hub-batched >= nats deliveries",
    ("S2", "p99_ms"): "<= 1 ms and <= best peer",
    ("S2x", "p99_ms"): "<= 2 ms and <= best peer",
    ("S2", "cpu_us_per_delivery"): "hub <= 2x mosquitto",
    ("S2x", "cpu_us_per_delivery"): "hub <= 2x mosquitto",
    ("C5000", "kb_per_conn"): "< 50 KB",
    ("AGENT", "cpu_pct"): "< 10 % of a core",
    ("AGENT", "rss_mb"): "< 60 MB",
    ("AGENT", "samples_per_s"): "= 20 x 10 Hz = 200",
    ("AGENTMIX", "cpu_pct"): "< 10 % of a core",
    ("AGENTMIX", "rss_mb"): "< 60 MB",
    ("AGENTMIX", "samples_per_s"): "= 20 x 10 Hz = 200",
}


def loadgen(
    server: servers.Server,
    scenario: Scenario,
    args: argparse.Namespace,
    batch: int = 1,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run the load generator once against a running server."""
    pin = (
        ["taskset", "-c", args.loadgen_cpus]
        if args.loadgen_cpus and shutil.which("taskset")
        else []
    )
    command = [
        *pin,
        sys.executable,
        str(HERE / "loadgen.py"),
        "--protocol",
        server.protocol,
        "--url",
        server.url,
        "--pubs",
        str(scenario.pubs),
        "--subs",
        str(scenario.subs),
        "--rate",
        str(scenario.rate),
        "--batch",
        str(batch),
        "--server-pid",
        str(server.pid),
        "--warmup",
        str(args.warmup),
        "--duration",
        str(args.duration),
    ]
    if scenario.name == "C5000":
        command.append("--hold")
    command += extra
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_network(
    scenario: Scenario, server_name: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """One network scenario against one server: metric records."""
    batch = BATCH if server_name == "hub-batched" else 1
    log_rows = None
    hub_log = args.hub_log if server_name.startswith("hub") else None
    if server_name == "hub-xhub":
        return run_cross_hub(scenario, args)
    with servers.start(server_name, args.server_cpus, hub_log) as server:
        result = loadgen(server, scenario, args, batch)
        health = server.health()
        if server.log is not None and scenario.name != "C5000":
            start = result["window_start"]
            log_rows = server.log_rows(start, start + args.duration)
    rows = []
    if scenario.name == "C5000":
        metrics = {k: result[k] for k in ("kb_per_conn", "rss_mb", "lost")}
    else:
        throughput = "samples_per_s" if batch > 1 else "deliveries_per_s"
        metrics = {
            throughput: result["deliveries_per_s"],
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "lost": result["lost"],
            "cpu_pct": result["server_cpu_pct"],
        }
        if result["server_cpu_pct"] is not None and result["deliveries_per_s"]:
            # The server's CPU (all its processes) for one delivery: the
            # figure issue 10 holds the hub to, against Mosquitto's.
            metrics["cpu_us_per_delivery"] = (
                1e4 * result["server_cpu_pct"] / result["deliveries_per_s"]
            )
        if health is not None:
            metrics["log_backlog"] = health["log_backlog"]
        if log_rows is not None:
            # Committed during the window (the hub pauses agents at high
            # water, so with a backlog that stays under it this is what the
            # log sustains).
            metrics["log_rows_per_s"] = log_rows[0] / args.duration
            metrics["sample_rows_per_s"] = log_rows[1] / args.duration
    for metric, value in metrics.items():
        if value is not None:
            rows.append(
                {
                    "scenario": scenario.name,
                    "server": server_name,
                    "metric": metric,
                    "value": round(float(value), 3),
                }
            )
    extra = {
        k: result.get(k)
        for k in (
            "gaps",
            "out_of_order",
            "disconnects",
            "loadgen_cpu_pct",
            "max_ms",
            "server_own_cpu_pct",
        )
    }
    print(
        f"  {scenario.name:<6} {server_name:<12} {json.dumps(metrics)}  {json.dumps(extra)}",
        file=sys.stderr,
        flush=True,
    )
    return rows


def run_cross_hub(scenario: Scenario, args: argparse.Namespace) -> list[dict[str, Any]]:
    """A network scenario through two hubs on NATS: publishers (agents) on hub A,
    subscribers (clients) on hub B; compare with the `hub` column of the same run.

    The CPU figure is both hubs', their writers' and the NATS server's.
    """
    with servers.start_two_hubs(args.server_cpus, args.hub_log) as (a, b, nats_pid):
        extra = ("--sub-url", b.url, "--wait-listed", str(b.http))
        extra += ("--server-pid", str(b.pid), "--server-pid", str(nats_pid))
        result = loadgen(a, scenario, args, 1, extra)
    metrics = {
        "deliveries_per_s": result["deliveries_per_s"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "lost": result["lost"],
        "cpu_pct": result["server_cpu_pct"],
    }
    if result["server_cpu_pct"] is not None and result["deliveries_per_s"]:
        metrics["cpu_us_per_delivery"] = 1e4 * result["server_cpu_pct"] / result["deliveries_per_s"]
    extra_figures = {k: result.get(k) for k in ("gaps", "out_of_order", "disconnects", "max_ms")}
    print(
        f"  {scenario.name:<6} {'hub-xhub':<12} {json.dumps(metrics)}  {json.dumps(extra_figures)}",
        file=sys.stderr,
        flush=True,
    )
    return [
        {"scenario": scenario.name, "server": "hub-xhub", "metric": m, "value": round(float(v), 3)}
        for m, v in metrics.items()
        if v is not None
    ]


def run_agent_footprint(scenario: Scenario, args: argparse.Namespace) -> list[dict[str, Any]]:
    """An agent serving simulated instruments at 10 Hz: its CPU and memory, samples that arrived.

    AGENT polls serial line thermometers only; AGENTMIX mixes the drivers
    (`MIX`). The simulators run in processes of their own, so the figures are
    the agent's alone.
    """
    mix = MIX if scenario.name == "AGENTMIX" else {"serial_line": scenario.pubs}
    interval = 1 / scenario.rate
    with (
        tempfile.TemporaryDirectory(prefix="kmz-bench-agent-") as folder,
        contextlib.ExitStack() as stack,
    ):
        hub = stack.enter_context(servers.start("hub", args.server_cpus))
        lines = [f'hub = "{hub.http}"', 'agent_id = "bench-pi"']
        lines += ["[spool]", f'path = "{Path(folder) / "spool.sqlite"}"']
        drivers: dict[str, str] = {}
        if mix.get("serial_line"):
            # AGENT's ids and profile as before, so its figures stay comparable.
            ids = [f"t{i:02d}" for i in range(1, mix["serial_line"] + 1)]
            paths = stack.enter_context(_serial_simulator(Path(folder), ids))
            for instrument in ids:
                lines += _serial_instrument(instrument, paths[instrument], interval, scenario)
                drivers[instrument] = "serial_line"
        if mix.get("modbus"):
            units = list(range(1, mix["modbus"] + 1))
            port = stack.enter_context(_modbus_simulator(units))
            for unit in units:
                lines += _modbus_instrument(f"kiln{unit}", port, unit, interval)
                drivers[f"kiln{unit}"] = "modbus"
        for index in range(mix.get("i2c", 0)):
            lines += _i2c_instrument(f"germ{index + 1}", index, interval)
            drivers[f"germ{index + 1}"] = "i2c"
        config = Path(folder) / "agent.toml"
        config.write_text("\n".join(lines) + "\n")
        pin = ["taskset", "-c", args.loadgen_cpus] if args.loadgen_cpus else []
        env = {**os.environ, "PYTHONASYNCIODEBUG": ""}
        agent = stack.enter_context(
            _process([*pin, sys.executable, "-m", "kleinmaelzung.cli", "agent", str(config)], env)
        )
        time.sleep(args.warmup + 2)  # start-up: imports, ports, handshake
        if agent.poll() is not None:
            raise RuntimeError(
                f"agent exited with {agent.returncode}; config:\n{config.read_text()}"
            )
        before, since = _cpu_seconds(agent.pid), time.time()
        time.sleep(args.duration)
        cpu = 100 * (_cpu_seconds(agent.pid) - before) / args.duration
        rss = _rss_mb(agent.pid)
        health = hub.health() or {}
        # A stalled agent would look cheap: count what reached the hub's log.
        counts = _logged_samples(hub.http or "", since, since + args.duration, list(drivers))
    rate = sum(counts.values()) / args.duration
    by_driver = {
        driver: sum(counts.get(i, 0) for i, d in drivers.items() if d == driver) / args.duration
        for driver in dict.fromkeys(drivers.values())
    }
    # An instrument that sent nothing hides behind a total that is nearly right.
    silent = sorted(i for i in drivers if not counts.get(i))
    figures: dict[str, float] = {
        "cpu_pct": round(cpu, 2),
        "rss_mb": round(rss, 1),
        "samples_per_s": round(rate, 1),
        "log_backlog": float(health.get("log_backlog", -1)),  # type: ignore[arg-type]
    }
    rows = [
        {"scenario": scenario.name, "server": "hub", "metric": metric, "value": value}
        for metric, value in figures.items()
    ]
    per_driver = " ".join(f"{d}={r:.0f}/s" for d, r in by_driver.items())
    print(
        f"  {scenario.name:<8} hub        cpu={cpu:.1f}% rss={rss:.1f} MB samples/s={rate:.0f}"
        f" (expected {scenario.pubs * scenario.rate:.0f}; {per_driver})"
        + (f" silent: {', '.join(silent)}" if silent else ""),
        file=sys.stderr,
        flush=True,
    )
    return rows


def _serial_instrument(
    instrument: str, port: str, interval: float, scenario: Scenario
) -> list[str]:
    # AGENT keeps the config it was measured with (no driver key: serial_line).
    driver = ['driver = "serial_line"'] if scenario.name == "AGENTMIX" else []
    return [
        "[[instruments]]",
        f'id = "{instrument}"',
        *driver,
        'profile = "kmz-thermometer"',
        f'port = "{port}"',
        f"poll_interval_s = {interval}",
    ]


def _modbus_instrument(instrument: str, port: int, unit: int, interval: float) -> list[str]:
    # One gateway in front of one RS-485 line: the units share a bus and a connection.
    return [
        "[[instruments]]",
        f'id = "{instrument}"',
        'driver = "modbus"',
        'bus = "kiln-line"',
        f"poll_interval_s = {interval}",
        "[instruments.settings]",
        'transport = "tcp"',
        'host = "127.0.0.1"',
        f"port = {port}",
        f"unit = {unit}",
        'map = "kmz-kiln-modbus"',
    ]


#: Simulated I2C sensors: (adapter, sensor, address). Two adapters, as a Pi
#: needs for six sensors when each kind has only two addresses.
I2C_SENSORS = [
    (1, "sht3x", 0x44),
    (1, "sht3x", 0x45),
    (1, "bme280", 0x76),
    (3, "bme280", 0x77),
    (3, "sht3x", 0x44),
    (3, "bme280", 0x76),
]


def _i2c_instrument(instrument: str, index: int, interval: float) -> list[str]:
    adapter, sensor, address = I2C_SENSORS[index % len(I2C_SENSORS)]
    return [
        "[[instruments]]",
        f'id = "{instrument}"',
        'driver = "i2c"',
        f'bus = "i2c-{adapter}"',
        f"poll_interval_s = {interval}",
        "[instruments.settings]",
        f'sensor = "{sensor}"',
        f"address = 0x{address:02x}",
        f"bus = {adapter}",
        "simulated = true",
    ]


@contextlib.contextmanager
def _process(
    command: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[Popen[bytes]]:
    """A child process, stopped when the block ends; its stderr goes to `log` if given."""
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(log.open("wb")) if log else subprocess.DEVNULL
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _serial_simulator(folder: Path, ids: list[str]) -> Iterator[dict[str, str]]:
    """`kmz sim` serving `ids` on ptys: their paths by id."""
    paths_file = folder / "ptys.json"
    command = [sys.executable, "-m", "kleinmaelzung.cli", "sim", "--paths-file", str(paths_file)]
    with _process([*command, *ids]) as sim:
        deadline = time.monotonic() + 15
        while not paths_file.exists():
            if time.monotonic() > deadline or sim.poll() is not None:
                raise RuntimeError("simulator did not start")
            time.sleep(0.05)
        paths: dict[str, str] = json.loads(paths_file.read_text())
        yield paths


@contextlib.contextmanager
def _modbus_simulator(units: list[int]) -> Iterator[int]:
    """Simulated kiln controllers (several unit ids) on one Modbus TCP server: its port."""
    port = servers.free_port()
    code = (
        "import asyncio\n"
        "from kleinmaelzung.sim.modbus import serve_kiln\n"
        f"asyncio.run(serve_kiln(units={units!r}, port={port}))\n"
    )
    with _process([sys.executable, "-c", code]) as sim:
        servers.wait_for_port(port, sim)
        yield port


def _logged_samples(
    hub_http: str, start: float, end: float, instruments: list[str]
) -> Counter[str]:
    """Samples by instrument the hub logged as received with a hub timestamp in [start, end)."""
    counts: Counter[str] = Counter()
    # One instrument per request: an answer is held to the hub's 1 MiB frame rule.
    for instrument in instruments:
        url = f"{hub_http}/api/log?limit=10000&instrument={instrument}"
        with urllib.request.urlopen(url, timeout=10) as response:
            entries = json.loads(response.read())["entries"]
        counts.update(
            sample["instrument"]
            for e in entries
            if e["type"] == "data" and e["direction"] == "in" and start <= e["ts"] < end
            for sample in e["message"]["samples"]
            if sample["instrument"] == instrument
        )
    return counts


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def table(rows: list[dict[str, Any]], server_names: list[str]) -> str:
    """Figures by scenario and metric, one column per server, and hub vs best peer."""
    values: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        values.setdefault((row["scenario"], row["metric"]), {})[row["server"]] = row["value"]
    header = ["scenario", "metric", *server_names, "hub/best peer", "target"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (scenario, metric), by_server in values.items():
        peers = [by_server[p] for p in ("mosquitto", "nats") if p in by_server]
        ours = by_server.get("hub-batched" if metric == "samples_per_s" else "hub")
        ratio = ""
        if peers and ours is not None and metric in ("deliveries_per_s", "samples_per_s"):
            ratio = f"{ours / max(peers):.2f}"
        elif ours is not None and metric == "cpu_us_per_delivery" and "mosquitto" in by_server:
            ratio = f"{ours / by_server['mosquitto']:.2f} (vs mosquitto)"
        elif peers and ours is not None and metric in ("p50_ms", "p99_ms", "kb_per_conn"):
            best = min(peers)
            ratio = f"{ours / best:.2f} (lower is better)" if best else ""
        cells = [f"{by_server[s]:,.3g}" if s in by_server else "" for s in server_names]
        lines.append(
            "| "
            + " | ".join([scenario, metric, *cells, ratio, TARGETS.get((scenario, metric), "")])
            + " |"
        )
    return "\n".join(lines)


def main() -> int:
    """Run the chosen scenarios against the chosen servers and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short windows: all in a few minutes")
    parser.add_argument("--json", type=Path, help="write one JSON object per figure to FILE")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--servers",
        default="hub,hub-batched,mosquitto,nats",
        help="hub-thread: the hub with its log's writer as a thread (before issue 10's process);"
        " hub-xhub: agents on hub A, clients on hub B, over NATS (scale-out, issue 16);"
        " aiohttp-floor: aiohttp relaying the frames with none of the hub's work"
        " (floor_relay.py), the stack's share of the hub's figures",
    )
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--loadgen-cpus", default="1")
    parser.add_argument(
        "--hub-log",
        help="a PostgreSQL URL for the hub's traffic log (a fresh schema per run, dropped"
        " afterwards), e.g. postgresql://postgres@127.0.0.1:5432/test; default SQLite",
    )
    args = parser.parse_args()
    try:
        import picows  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError as exc:
        print(
            f"benchmarks/run.py needs the bench extra ({exc.name} is missing):\n"
            "    scripts/bench ...   or   pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2
    args.warmup, args.duration = (1.0, 4.0) if args.quick else (2.0, 10.0)
    wanted = [s for s in args.servers.split(",") if s]
    missing = [s for s in wanted if not servers.available(s)]
    if missing:
        print(
            f"not installed, skipped: {', '.join(missing)} (apt-get install mosquitto nats-server)",
            file=sys.stderr,
        )
    server_names = [s for s in wanted if s not in missing]
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    for name in args.scenarios.split(","):
        scenario = SCENARIOS[name]
        if name in ("AGENT", "AGENTMIX"):
            if "hub" in server_names:
                rows += run_agent_footprint(scenario, args)
            continue
        for server in server_names:
            if server == "hub-batched" and name not in ("S1", "S3"):
                continue
            if server == "hub-xhub" and name not in ("S1", "S2", "S2x"):
                continue
            rows += run_network(scenario, server, args)
    print(table(rows, server_names))
    print(
        f"\n{len(rows)} figures in {time.monotonic() - started:.0f} s "
        f"(window {args.duration:g} s per run; hub log {args.hub_log or 'SQLite'};"
        f" server and its processes on CPU {args.server_cpus}, "
        f"load generator on CPU {args.loadgen_cpus})"
    )
    if args.json:
        with args.json.open("w") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
