"""An export of a calibrated balance holds raw and corrected values: CSV, Parquet and NDJSON
give, for each sample taken while a calibration was in force, the corrected value and the
calibration's id that a subscriber got for it, on both log backends; before the approval and
after the withdrawal, and for ranges no calibration touched, raw only.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pandas
import pytest

from kleinmaelzung.client import export

from ..hub.auth_setup import Lab, client_hello, greeted
from .test_failed_calibration import signed_run
from .test_history_corrected import committed, log_place, logged_lab, postgres_url
from .test_hub_api import Balance, api, register

__all__ = ["log_place", "logged_lab", "postgres_url"]  # fixtures, used by name

RAW_HEADER = ["time (UTC)", "instrument", "mass [g]", "stable"]
HEADER = [
    "time (UTC)",
    "instrument",
    "mass [g]",
    "mass corrected [g]",
    "mass calibration",
    "stable",
]


@pytest.mark.slow
async def test_an_export_holds_the_corrected_values_subscribers_got(
    logged_lab: tuple[Lab, Balance], tmp_path: Path
) -> None:
    hub, balance = logged_lab
    await register(hub)
    admin = api(hub, "ada")
    number = await signed_run(hub, 0.001, span=2e-5)
    approved = await admin.approve(number, "Ada Admin")
    assert approved.correction is not None
    correction = approved.correction
    withdrawn = await admin.withdraw(number, "moved to another bench")
    start, end = correction.valid_from, withdrawn.withdrawn_at
    assert end is not None and end > start
    # Samples before, inside and after the time the calibration was in force,
    # close to both edges; taken at a whole millisecond, as the CSV shows time.
    span = end - start
    times = [start - 2 * span, start - 0.001, start, start + span / 2, end - 0.001, end]
    times = [math.ceil(t * 1000) / 1000 for t in times] + [end + span]
    masses = [round(20.0 + 31.7 * i, 3) for i in range(len(times))]
    for ts, mass in zip(times, masses, strict=True):
        await balance.send(mass, stable=True, ts=ts)
    await committed(balance)
    since, until = times[0] - 1, times[-1] + 1
    live = await resumed(hub, since, len(times))
    inside = [s for s in live if "calibration" in s]
    assert 2 <= len(inside) < len(live)  # both kinds of row are there

    token = hub.tokens["vic"]
    csv_file = await export(
        hub.url, tmp_path / "b.csv", instrument="balance", since=since, until=until, token=token
    )
    rows = list(csv.reader(io.StringIO(csv_file.path.read_text("utf-8-sig"))))
    assert rows[0] == HEADER
    assert len(rows) == 1 + len(live)
    for row, sample in zip(rows[1:], live, strict=True):
        assert float(row[2]) == sample["values"]["mass"]
        if "calibration" in sample:
            assert float(row[3]) == sample["corrected"]["mass"]
            assert row[4] == sample["calibration"] == f"{number}/1"
        else:
            assert row[3:5] == ["", ""]
        assert row[5] == "true"

    parquet_file = await export(
        hub.url,
        tmp_path / "b.parquet",
        instrument="balance",
        since=since,
        until=until,
        format="parquet",
        token=token,
    )
    assert parquet_file.rows == csv_file.rows == len(live)
    from_csv = pandas.read_csv(csv_file.path)
    from_parquet = pandas.read_parquet(parquet_file.path)
    assert list(from_parquet.columns) == HEADER
    from_csv["time (UTC)"] = pandas.to_datetime(from_csv["time (UTC)"]).dt.tz_localize("UTC")
    from_parquet["time (UTC)"] = from_parquet["time (UTC)"].dt.as_unit("ns")
    pandas.testing.assert_frame_equal(from_csv, from_parquet, check_dtype=False)

    # NDJSON: each line is the sample as the subscriber got it, run beside.
    lines = await ndjson(hub, since, until)
    assert [{k: v for k, v in line.items() if k != "run"} for line in lines] == [
        {"instrument": "balance", **sample} for sample in live
    ]

    # A range no calibration touched has the raw columns only.
    before = await export(
        hub.url, tmp_path / "before.csv", instrument="balance", until=start - 1, token=token
    )
    assert next(csv.reader(io.StringIO(before.path.read_text("utf-8-sig")))) == RAW_HEADER


async def resumed(hub: Lab, since: float, count: int) -> list[dict[str, Any]]:
    """The balance's samples from `since` as a subscription resumed from the log gives them."""
    hello = client_hello(hub.tokens["vic"])
    async with greeted(hub.url, "/ws/client", hello) as peer:
        subscribe = {"type": "subscribe", "id": "1", "patterns": ["balance"], "since_ts": since}
        await peer.send(subscribe)
        got: list[dict[str, Any]] = []
        while len(got) < count:
            got += (await peer.receive_type("data"))["samples"]
    return got


async def ndjson(hub: Lab, since: float, until: float) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {hub.tokens['vic']}"}
    params = {"instrument": "balance", "since": repr(since), "until": repr(until)}
    params["format"] = "ndjson"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"{hub.url}/api/export", params=params, headers=headers) as answer,
    ):
        assert answer.status == 200, await answer.text()
        assert answer.headers["X-Kmz-Corrected-Channels"] == "mass"
        return [msgspec.json.decode(line) for line in (await answer.read()).splitlines()]
