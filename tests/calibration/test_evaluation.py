"""A whole record's figures: the example balance, as-found and as-left; standards' due dates."""

from __future__ import annotations

import datetime
import math

import msgspec
import pytest

from kleinmaelzung.calibration import (
    PointResult,
    Reading,
    StandardNotUsable,
    add_point,
    check_usable,
    evaluate,
    student_t_quantile,
)
from kleinmaelzung.calibration.examples import balance_record, balance_standards


def test_the_example_balance_fails_as_found_and_passes_as_left() -> None:
    evaluation = evaluate(balance_record())
    assert evaluation.as_found is not None
    assert evaluation.as_left is not None
    assert evaluation.as_found.verdict == "fail"
    assert evaluation.as_left.verdict == "pass"
    assert evaluation.verdict == "pass"
    assert len(evaluation.as_left.points) == 10
    # The as-found span error: about 6 mg per 100 g, so 0.012 g at 200 g.
    assert evaluation.as_found.points[-1].error == pytest.approx(0.01085, abs=1e-9)


def test_a_point_by_hand_from_the_example() -> None:
    """As-left at 100 g: readings 100.000, 100.001, 100.000 g against 100.00008 g.

    mean 100.000333..., E = 0.000253 g; s = 0.000577 g, u_rep = s/sqrt(3) =
    0.000333 g (nu = 2); u_ref = 0.0001/2; u_res = 0.001/sqrt(12); u_c =
    0.000444 g; nu_eff = u_c^4 / (u_rep^4 / 2) = 6.28, so k = t_95.45(6) =
    2.52 (GUM G.4.1, truncated) and U = 0.00112 g; guard band: limit
    0.002 - U = 0.00088 g, |E| below it: pass.
    """
    point = evaluate(balance_record()).as_left.points[5]  # type: ignore[union-attr]
    assert point.nominal == 100.0
    assert point.mean == pytest.approx(100.0 + 1 / 3000, abs=1e-12)
    assert point.error == pytest.approx(1 / 3000 - 0.00008, abs=1e-12)
    u_rep = 0.001 / 3
    u_c = math.sqrt(0.00005**2 + u_rep**2 + 0.001**2 / 12)
    assert point.budget.dof_eff == pytest.approx(u_c**4 / (u_rep**4 / 2), rel=1e-9)
    assert point.budget.k == student_t_quantile(0.9545, 6)
    assert point.expanded == pytest.approx(point.budget.k * u_c, rel=1e-12)
    assert point.acceptance_limit == pytest.approx(0.002 - point.expanded, rel=1e-12)
    assert point.verdict == "pass"


def test_the_fit_is_of_corrections_against_readings() -> None:
    evaluation = evaluate(balance_record())
    fit = evaluation.fit
    assert fit is not None
    assert fit.degree == 1
    final = evaluation.final.points
    for point, residual in zip(final, fit.residuals, strict=True):
        assert point.reference_value - point.mean - fit.predict(point.mean) == pytest.approx(
            residual, abs=1e-12
        )
    assert evaluation.linearity_error == max(abs(e) for e in fit.residuals)


def test_manual_readings_are_counted_per_point() -> None:
    record = balance_record()
    manual = PointResult(
        index=1,
        nominal=20.0,
        reference_value=20.00003,
        standards=("W-F1-SET-07",),
        readings=(Reading(value=20.0, ts=0.0, manual=True, note="display read by eye"),),
    )
    record = add_point(record, "as_left", manual)
    point = evaluate(record).as_left.points[1]  # type: ignore[union-attr]
    assert point.manual_readings == 1
    assert point.n == 1


def test_an_expired_standard_is_refused_with_a_clear_error() -> None:
    (weights,) = balance_standards()
    check_usable(weights, weights.due)  # the due date itself is still fine
    with pytest.raises(StandardNotUsable) as caught:
        check_usable(weights, weights.due + datetime.timedelta(days=1))
    message = str(caught.value)
    assert "W-F1-SET-07" in message
    assert "was due on 2027-04-30" in message
    assert "cannot be used on 2027-05-01" in message
    assert caught.value.code == "reference_standard_not_usable"


def test_a_point_with_an_expired_standard_cannot_be_added() -> None:
    record = balance_record()
    late = msgspec.structs.replace(record, calibrated_on=datetime.date(2027, 6, 1))
    point = record.as_left[3]
    with pytest.raises(StandardNotUsable, match="was due on"):
        add_point(late, "as_left", point)


def test_an_unknown_standard_is_refused() -> None:
    record = balance_record()
    point = msgspec.structs.replace(record.as_left[3], standards=("W-NOWHERE",))
    with pytest.raises(StandardNotUsable, match="W-NOWHERE"):
        add_point(record, "as_left", point)


def test_resolution_counted_at_zero_and_at_load_when_the_procedure_says_so() -> None:
    record = balance_record()
    once = evaluate(record).final.points[5].budget
    twice_procedure = msgspec.structs.replace(record.procedure, resolution_terms=2)
    twice = evaluate(msgspec.structs.replace(record, procedure=twice_procedure))
    budget = twice.final.points[5].budget
    assert [c.name for c in budget.components][-2:] == ["resolution at zero", "resolution at load"]
    assert budget.u_c**2 == pytest.approx(once.u_c**2 + 0.001**2 / 12, rel=1e-12)


def test_a_reading_that_is_not_a_number_is_refused() -> None:
    record = balance_record()
    point = msgspec.structs.replace(
        record.as_left[1], readings=(Reading(value=float("nan"), ts=0.0),)
    )
    with pytest.raises(ValueError, match="finite"):
        add_point(record, "as_left", point)
