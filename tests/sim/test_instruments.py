"""The simulated instruments' physics and line protocols, on simulated time."""

from __future__ import annotations

import random
import re

import pytest

from kleinmaelzung.sim import Balance, Hygrometer, KilnController, Thermometer


def test_kiln_approaches_its_setpoint_with_a_lag() -> None:
    kiln = KilnController("SN1", random.Random(1), now=0.0)
    assert kiln.handle("SP 80", 0.0) == "OK"
    kiln.advance(20.0)  # one time constant: 63 % of the way from 25 to 80
    assert kiln.pv == pytest.approx(25 + 0.632 * 55, abs=0.5)
    kiln.advance(200.0)
    assert kiln.pv == pytest.approx(80.0, abs=0.01)
    answer = kiln.handle("MEAS?", 200.0)
    assert answer is not None
    assert re.fullmatch(r"PV=\d+\.\d\d,SP=80\.00,OUT=\d+\.\d", answer)


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("SP 251", "ERR setpoint out of range"),
        ("SP hot", "ERR bad value"),
        ("SP nan", "ERR bad value"),
        ("BOOM", "ERR unknown command"),
    ],
)
def test_kiln_refusals(line: str, answer: str) -> None:
    assert KilnController("SN1", random.Random(1)).handle(line, 0.0) == answer


def test_balance_mt_sics_formats_and_settling() -> None:
    balance = Balance(serial="KMZ1", rng=random.Random(2))
    balance.place(12.345, 0.0)
    unstable = balance.handle("SI", 0.5)
    assert unstable is not None and unstable.startswith("S D ")
    assert balance.handle("T", 0.5) == "T I"
    assert balance.handle("S", 0.5) is None  # waits for stability
    stable = balance.handle("SI", 5.0) or ""
    assert re.fullmatch(r"S S {5}12\.3\d\d g", stable), stable  # 10-character field
    tare = balance.handle("T", 5.0) or ""
    assert re.fullmatch(r"T S {5}12\.3\d\d g", tare), tare
    net = balance.handle("SI", 5.1) or ""
    assert abs(float(net.split()[2])) < 0.005
    assert balance.handle("Z", 6.0) == "Z A"
    assert balance.handle("I4", 6.0) == 'I4 A "KMZ1"'
    assert balance.handle("XYZ", 6.0) == "ES"


def test_balance_s_gives_up_after_three_seconds() -> None:
    balance = Balance(serial="KMZ1", rng=random.Random(2), settle_s=100.0)
    balance.place(5.0, 0.0)
    assert balance.handle("S", 0.0) is None
    assert balance.handle("S", 3.0) == "S I"


def test_thermometers_drift_within_sense() -> None:
    steep = Thermometer("SN", random.Random(3))
    germ = Hygrometer("SN", random.Random(3))
    for t in range(0, 3600, 60):
        assert 13.0 < float(steep.handle("MEAS?", t) or "nan") < 15.0
        temperature, humidity = (germ.handle("MEAS?", t) or "").split(",")
        assert 15.0 < float(temperature) < 17.0 and 90.0 < float(humidity) <= 100.0
    assert (steep.handle("*IDN?", 0) or "").startswith("Kleinmaelzung,T-10,")
