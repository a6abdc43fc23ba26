"""A million-row export through a real `kmz hub` process: bounded memory on both sides.

The log is written straight through the SQLite backend (a million rows the
hub would take minutes to receive), then `kmz hub` serves it and `kmz
export` writes it to CSV and to Parquet, each a process of its own. Memory
is each process's peak RSS (the hub's VmHWM, the exporter's ru_maxrss), not
timed: bounded means that a million rows take no more than 120,000 do,
give or take a few chunks, while the CSV alone is ~50 MB. The two
files must read back equal.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas
import pytest

from kleinmaelzung.hub import HubConfig
from kleinmaelzung.hub.store import SqliteBackend

from ..hub.data_lab import NOVEMBER, write_kiln_samples
from .processes import Process, free_port, get_json, wait_until

ROWS = 1_000_000
#: More than two of the Parquet writer's row groups (`client.export.PARQUET_ROWS`).
SMALL_ROWS = 120_000
#: How much more a million rows may take than 120,000, per process.
GROWTH_BYTES = 40 << 20

#: Runs `kmz export ...`, then prints the process's peak RSS in bytes.
EXPORTER = (
    "import resource, sys\n"
    "from kleinmaelzung.cli import main\n"
    "status = main(sys.argv[1:])\n"
    "print('peak_rss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
    "sys.exit(status)\n"
)


def hub_peak_rss(process: Process) -> int:
    """The hub process's peak resident memory so far, in bytes (Linux)."""
    status = Path(f"/proc/{process.popen.pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.M)
    assert match, status
    return int(match[1]) * 1024


def run_export(url: str, target: Path, until: float) -> int:
    """`kmz export` of kiln-air up to `until` into `target`; its peak RSS in bytes."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            EXPORTER,
            "export",
            "--instrument",
            "kiln-air",
            "--since",
            str(NOVEMBER),
            "--until",
            str(until),
            "-o",
            str(target),
            "--hub",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    wrote, peak = result.stdout.splitlines()
    assert wrote.startswith("wrote ") and wrote.endswith(f" rows to {target}")
    return int(peak.split()[1])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_million_rows_export_in_bounded_memory_and_read_back_equal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = HubConfig(data_dir=data)
    write_kiln_samples(SqliteBackend(config.traffic_db), "kiln-air", ROWS, NOVEMBER)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hub = Process("hub", ["hub", "--port", str(port), "--data", str(data)], tmp_path)
    try:
        wait_until(lambda: get_json(url + "/api/health"), "hub health", 30.0, hub)
        peaks: dict[str, dict[str, int]] = {}
        for suffix in ("csv", "parquet"):
            small = run_export(url, tmp_path / f"small.{suffix}", NOVEMBER + SMALL_ROWS)
            hub_small = hub_peak_rss(hub)
            large = run_export(url, tmp_path / f"kiln.{suffix}", NOVEMBER + ROWS)
            peaks[suffix] = {
                "exporter": large - small,
                "hub": hub_peak_rss(hub) - hub_small,
            }
    finally:
        hub.stop()
    for suffix, growth in peaks.items():
        assert growth["exporter"] < GROWTH_BYTES, (suffix, peaks)
        assert growth["hub"] < GROWTH_BYTES, (suffix, peaks)
    assert (tmp_path / "kiln.csv").stat().st_size > 40 << 20  # far more than the bound
    from_csv = pandas.read_csv(tmp_path / "kiln.csv")
    from_parquet = pandas.read_parquet(tmp_path / "kiln.parquet")
    assert len(from_csv) == ROWS
    assert list(from_csv.columns) == list(from_parquet.columns)
    from_csv["time (UTC)"] = pandas.to_datetime(from_csv["time (UTC)"]).dt.tz_localize("UTC")
    from_parquet["time (UTC)"] = from_parquet["time (UTC)"].dt.as_unit("ns")
    pandas.testing.assert_frame_equal(from_csv, from_parquet, check_dtype=False)
    assert from_csv["time (UTC)"].is_monotonic_increasing
    assert from_csv["temperature [°C]"].iloc[-1] == 20.0 + (ROWS - 1) / 4
