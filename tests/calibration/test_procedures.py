"""Procedures from TOML: the example loads; a wrong file says file, key and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from kleinmaelzung.calibration import ProcedureError, is_stable, load_procedure, parse_procedure
from kleinmaelzung.calibration.examples import BALANCE_PROCEDURE
from kleinmaelzung.calibration.model import RawSample, Stability

MINIMAL = """\
name = "thermometer"
version = 1
title = "Thermometer in a stirred bath"
quantity = "temperature"
unit = "°C"
tolerance = { absolute = 0.1 }
[[points]]
nominal = 50.0
"""


def test_the_example_procedure_loads_with_every_setting(tmp_path: Path) -> None:
    path = tmp_path / "balance-linearity.toml"
    path.write_text(BALANCE_PROCEDURE, encoding="utf-8")
    procedure = load_procedure(path)
    assert (procedure.name, procedure.version, procedure.unit) == ("balance-linearity", 2, "g")
    assert len(procedure.points) == 10
    assert procedure.fit.polynomial_degree == 1
    assert procedure.stability.flag == "stable"
    assert procedure.decision_rule.kind == "guard_banded"
    assert procedure.tolerance_at(9).limit(200.0) == 0.003
    assert procedure.tolerance_at(0).limit(0.0) == 0.002
    assert procedure.environment[0].source == "germination-chamber.temperature"


def test_defaults_are_simple_acceptance_k2_and_d_over_sqrt12() -> None:
    procedure = parse_procedure(MINIMAL)
    assert procedure.decision_rule.kind == "simple"
    assert (procedure.coverage.method, procedure.coverage.k) == ("fixed", 2.0)
    assert procedure.resolution_full_step is False
    assert procedure.repetitions == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('version = "one"', "bench.toml: version: Expected `int`, got `str`"),
        ("version = 0", "bench.toml: version: Expected `int` >= 1"),
        ("colour = 1", "bench.toml: (top level): Object contains unknown field `colour`"),
        ('fit = { kind = "cubic" }', "bench.toml: fit.kind: Invalid enum value 'cubic'"),
        ('fit = { kind = "polynomial" }', "bench.toml: fit.degree: a polynomial fit needs"),
        ('fit = { kind = "polynomial", degree = 3 }', "bench.toml: fit: a degree-3 fit needs"),
        ("stability = { window = 5 }", "bench.toml: stability: give both window and max_spread"),
        ("tolerance = { absolute = -1 }", "bench.toml: tolerance.absolute: Expected `float` >= 0"),
        ('decision_rule = { kind = "lenient" }', "bench.toml: decision_rule.kind: Invalid enum"),
        (
            "[[points]]\nnominal = 50.0",
            "bench.toml: points: each nominal value may appear only once",
        ),
        ("version = [", "bench.toml: not valid TOML"),
    ],
)
def test_a_wrong_procedure_names_file_key_and_expectation(change: str, message: str) -> None:
    key = change.split("=")[0].strip()
    lines = [line for line in MINIMAL.splitlines() if not line.startswith(f"{key} =")]
    text = "\n".join([*lines, change]) if not change.startswith("[[") else MINIMAL + change
    if change.startswith(("version", "colour", "fit", "stability", "tolerance", "decision")):
        # Top-level keys must come before the [[points]] table.
        head, _, tail = "\n".join(lines).partition("[[points]]")
        text = f"{head}{change}\n[[points]]{tail}"
    with pytest.raises(ProcedureError) as caught:
        parse_procedure(text, source="bench.toml")
    assert str(caught.value).startswith(message), str(caught.value)
    assert caught.value.code == "invalid_procedure"


def test_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ProcedureError, match="cannot read the file"):
        load_procedure(tmp_path / "missing.toml")


def test_stability_by_window_and_by_the_instruments_flag() -> None:
    window = Stability(window=3, max_spread=0.002)
    samples = [RawSample(ts=i, value=v) for i, v in enumerate([1.0, 1.010, 1.001, 1.002, 1.000])]
    assert is_stable(samples, window)
    assert not is_stable(samples[:4], window)  # 1.010 still in the last three
    assert not is_stable(samples[:2], window)  # too few
    flag = Stability(flag="stable")
    assert is_stable([RawSample(ts=0, value=1.0, stable=True)], flag)
    assert not is_stable([RawSample(ts=0, value=1.0, stable=False)], flag)
    assert not is_stable([], flag)
