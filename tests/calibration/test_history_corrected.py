"""History keeps raw and corrected values: ``/api/history``, the client's history and a resumed
subscription give, for samples taken while a calibration was in force, the corrected value and
the calibration's id, on both log backends; before the approval and after the withdrawal, raw only.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from kleinmaelzung.client import Client
from kleinmaelzung.protocol import History

from ..hub.auth_setup import Lab, agent_hello, auth_lab, client_hello, greeted
from ..hub.log_backends import LogPlace, log_place, postgres_url
from .test_failed_calibration import signed_run
from .test_hub_api import PROCEDURE, Balance, api, register

__all__ = ["log_place", "postgres_url"]  # fixtures, used by name

#: Interpolated between points (not affine), as against a linear fit (affine).
UNFITTED = PROCEDURE.replace('fit = { kind = "linear" }\n', "").replace(
    'name = "balance-quick"', 'name = "balance-unfitted"'
)


@pytest.fixture
async def logged_lab(tmp_path: Path, log_place: LogPlace) -> AsyncIterator[tuple[Lab, Balance]]:
    async with auth_lab(tmp_path, log_url=log_place.url) as lab:
        hello = agent_hello("pi-1", ("balance",), lab.tokens["pi-1"])
        hello["instruments"][0]["channels"].append({"name": "stable"})
        async with greeted(lab.url, "/ws/agent", hello) as peer:
            yield lab, Balance(peer)


def statistics(values: list[float]) -> tuple[int, float, float, float]:
    return len(values), min(values), max(values), math.fsum(values) / len(values)


@pytest.mark.slow
@pytest.mark.parametrize("procedure", ["balance-quick", "balance-unfitted"])
async def test_history_holds_the_corrected_values_of_the_calibration_in_force(
    logged_lab: tuple[Lab, Balance], procedure: str
) -> None:
    hub, balance = logged_lab
    await register(hub)
    admin = api(hub, "ada")
    await admin.register_procedure(UNFITTED, source="balance-unfitted.toml")
    # A span error of 2 mg per 100 g (within the 5 mg tolerance) and 1 mg of offset.
    number = await signed_run(hub, 0.001, span=2e-5, procedure=procedure)
    approved = await admin.approve(number, "Ada Admin")
    assert approved.correction is not None
    correction = approved.correction
    withdrawn = await admin.withdraw(number, "moved to another bench")
    start, end = correction.valid_from, withdrawn.withdrawn_at
    assert end is not None and end > start

    # Buckets of a quarter of the time the calibration was in force, the
    # approval inside bucket 1 and the withdrawal inside bucket 5; samples
    # (sent now, with their times) in every bucket, on both sides of each edge.
    every = (end - start) / 4
    since = start - 1.5 * every
    times = [since + every * (b + f) for b in range(7) for f in (0.2, 0.7)]
    times += [start - every * 0.01, start + every * 0.01, end - every * 0.01, end + every * 0.01]
    times.sort()
    masses = [round(50.0 + 7.3 * i, 3) for i in range(len(times))]
    seqs = []
    for ts, mass in zip(times, masses, strict=True):
        await balance.send(mass, stable=True, ts=ts)
        seqs.append(balance.seq)
    await committed(balance)

    until = since + 7 * every
    raw: dict[int, list[float]] = {}
    fixed: dict[int, list[float]] = {}
    for ts, mass in zip(times, masses, strict=True):
        bucket = int((ts - since) // every)
        raw.setdefault(bucket, []).append(mass)
        if start <= ts < end:
            fixed.setdefault(bucket, []).append(correction.apply(mass))
    assert sorted(fixed) == [1, 2, 3, 4, 5]  # both edges inside a bucket

    history = await fetch_raw_history(hub, since, until, every)
    assert [round((t - since) / every) for t in history.t] == sorted(raw)
    series = history.series["mass"]
    corrected = history.corrected["mass"]
    for index, t in enumerate(history.t):
        bucket = round((t - since) / every)
        n, low, high, mean = statistics(raw[bucket])
        assert (series.count[index], series.min[index], series.max[index]) == (n, low, high)
        assert series.mean[index] == pytest.approx(mean, abs=1e-9)  # raw stays raw
        if bucket not in fixed:
            assert corrected.count[index] == 0 and corrected.mean[index] is None
            continue
        n, low, high, mean = statistics(fixed[bucket])
        assert corrected.count[index] == n
        # Min and max exactly; the mean of an affine correction to its rounding
        # (the correction of the mean against the mean of rounded corrections).
        assert corrected.min[index] == pytest.approx(low, abs=1e-9)
        assert corrected.max[index] == pytest.approx(high, abs=1e-9)
        assert corrected.mean[index] == pytest.approx(mean, abs=0.6 * 10**-correction.decimals)
    assert [(c.calibration, c.channel, c.since, c.until) for c in history.calibrations] == [
        (f"{number}/1", "mass", start, end)
    ]

    # The client's history: the corrected mean and the calibration beside the raw one.
    async with Client(hub.url, token=hub.tokens["vic"]) as client:
        points = await client.history("balance", since=since, until=until, every=every)
        by_bucket = {round((p.ts - since) / every): p for p in points}
        assert by_bucket[3].corrected["mass"] == pytest.approx(
            statistics(fixed[3])[3], abs=0.6 * 10**-correction.decimals
        )
        assert by_bucket[3].calibration == {"mass": f"{number}/1"}
        assert by_bucket[0].corrected == {} and by_bucket[0].calibration == {}
        assert by_bucket[0].values["mass"] == pytest.approx(statistics(raw[0])[3])

    # A subscription resumed from the log gets each sample as it was sent live.
    hello = client_hello(hub.tokens["vic"])
    async with greeted(hub.url, "/ws/client", hello) as peer:
        subscribe = {"type": "subscribe", "id": "1", "patterns": ["balance"], "since_ts": since}
        await peer.send(subscribe)
        recovered: dict[int, dict[str, Any]] = {}
        while not set(seqs) <= set(recovered):
            for sample in (await peer.receive_type("data"))["samples"]:
                recovered[sample["seq"]] = sample
    # (PostgreSQL keeps times to the microsecond.)
    for ts, mass, seq in zip(times, masses, seqs, strict=True):
        sample = recovered[seq]
        assert sample["ts"] == pytest.approx(ts, abs=1e-6)
        assert sample["values"]["mass"] == mass
        if start <= ts < end:
            assert sample["corrected"] == {"mass": correction.apply(mass)}
            assert sample["calibration"] == f"{number}/1"
        else:
            assert "corrected" not in sample and "calibration" not in sample


async def committed(balance: Balance) -> None:
    """Until the hub acknowledges the last sample sent: it is in the log (acks follow commits)."""
    while True:
        ack = await balance.peer.receive_type("ack")
        if ack["seqs"].get("balance", -1) >= balance.seq:
            return


async def fetch_raw_history(hub: Lab, since: float, until: float, every: float) -> History:
    """The answer of ``GET /api/history/balance`` as it is."""
    headers = {"Authorization": f"Bearer {hub.tokens['vic']}"}
    params = {"since": repr(since), "until": repr(until), "every": repr(every)}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"{hub.url}/api/history/balance", params=params, headers=headers) as answer,
    ):
        assert answer.status == 200, await answer.text()
        return msgspec.json.decode(await answer.read(), type=History)
