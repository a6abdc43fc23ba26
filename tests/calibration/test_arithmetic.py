"""Hand-computed cases and properties of the arithmetic beyond the reference file."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kleinmaelzung.calibration import (
    InsufficientData,
    combine,
    coverage_factor,
    fit_polynomial,
    repeatability,
    report,
    student_t_quantile,
)
from kleinmaelzung.calibration.evaluation import acceptance_limit, decide
from kleinmaelzung.calibration.model import DecisionRule
from kleinmaelzung.calibration.uncertainty import (
    Component,
    reference_component,
    repeatability_component,
    resolution_component,
    round_uncertainty,
)


def test_hand_computed_balance_point_and_both_decision_rules() -> None:
    """100 g weight (U = 0.1 mg, k = 2), readings 100.001/100.002/100.003 g, d = 1 mg.

    By hand: mean 100.002, E = 0.002 g, s = 0.001 g, u_rep = 0.001/sqrt(3),
    u_ref = 0.00005, u_res = 0.001/sqrt(12); u_c^2 = 2.5e-9 + 3.3333e-7 +
    8.3333e-8 = 4.191667e-7, u_c = 6.474308e-4, U = 1.294862e-3 g.
    With T = 2 mg: simple acceptance passes (|E| = T exactly); guard-banded
    (T - U = 0.705 mg) fails.
    """
    stats = repeatability([100.001, 100.002, 100.003])
    budget = combine(
        [
            reference_component(0.0001, 2.0),
            repeatability_component(stats),
            resolution_component(0.001),
        ]
    )
    error = stats.mean - 100.0
    assert error == pytest.approx(0.002, abs=1e-12)
    assert stats.s == pytest.approx(0.001, rel=1e-9)
    assert budget.u_c**2 == pytest.approx(2.5e-9 + 1e-6 / 3 + 1e-6 / 12, rel=1e-12)
    assert budget.expanded == pytest.approx(2 * math.sqrt(4.1916666666666667e-7), rel=1e-12)
    assert report(error, budget.expanded) == ("0.0020", "0.0013")
    simple = acceptance_limit(DecisionRule(kind="simple"), 0.002, budget.expanded)
    guarded = acceptance_limit(DecisionRule(kind="guard_banded"), 0.002, budget.expanded)
    assert decide(error, simple) == "pass"
    assert guarded == pytest.approx(0.002 - budget.expanded)
    assert decide(error, guarded) == "fail"
    # A guard band wider than the tolerance passes nothing, not even E = 0.
    assert decide(0.0, acceptance_limit(DecisionRule(kind="guard_banded"), 0.001, 0.0013)) == "fail"


def test_welch_satterthwaite_with_few_readings_widens_k() -> None:
    """Repeatability dominant, 3 readings: nu_eff from GUM G.4.1, k = t_95.45(floor(nu_eff))."""
    rep = Component(name="repeatability", u=0.010, dof=2, kind="A")
    ref = Component(name="reference", u=0.002)
    budget = combine([rep, ref], welch_satterthwaite=True)
    u_c2 = 0.010**2 + 0.002**2
    assert budget.dof_eff == pytest.approx(u_c2**2 / (0.010**4 / 2), rel=1e-12)  # 2.1632
    assert budget.k == pytest.approx(student_t_quantile(0.9545, 2), rel=1e-15)
    assert budget.k == pytest.approx(4.5266, abs=5e-5)  # GUM Table G.2: 4.53
    assert budget.expanded == pytest.approx(budget.k * math.sqrt(u_c2), rel=1e-15)


@pytest.mark.parametrize(
    ("dof", "table_g2"),
    [(1, "13.97"), (2, "4.53"), (3, "3.31"), (5, "2.65"), (10, "2.28"), (20, "2.13"), (50, "2.05")],
)
def test_student_quantiles_match_gum_table_g2(dof: int, table_g2: str) -> None:
    assert f"{student_t_quantile(0.9545, dof):.2f}" == table_g2


def test_coverage_factor_truncates_dof_and_tends_to_normal() -> None:
    assert coverage_factor(9.9) == student_t_quantile(0.9545, 9)
    assert coverage_factor(None) == pytest.approx(2.0000024, abs=1e-7)
    assert coverage_factor(10**7) == pytest.approx(coverage_factor(None), abs=1e-6)
    # The series and the exact sum agree where they meet.
    assert student_t_quantile(0.9545, 99_999) == pytest.approx(
        student_t_quantile(0.9545, 100_000), rel=1e-9
    )


@pytest.mark.parametrize(
    ("value", "expanded", "reported"),
    [
        (0.06000000000000227, 0.021664102412362562, ("0.060", "0.022")),
        (1.23456, 0.0995, ("1.23", "0.10")),
        (-0.00001, 0.0021, ("0.0000", "0.0021")),
        (100.0004, 0.00125, ("100.0004", "0.0013")),
    ],
)
def test_report_rounds_u_to_two_digits_and_the_value_to_its_place(
    value: float, expanded: float, reported: tuple[str, str]
) -> None:
    assert report(value, expanded) == reported


def test_round_uncertainty_keeps_two_significant_digits() -> None:
    assert str(round_uncertainty(0.021664)) == "0.022"
    assert str(round_uncertainty(1234.0)) == "1.2E+3"


def test_one_reading_has_no_repeatability_term() -> None:
    stats = repeatability([5.0])
    assert (stats.n, stats.s, stats.dof) == (1, 0.0, 0)
    with pytest.raises(InsufficientData):
        repeatability([])


def test_fit_refuses_too_few_or_coincident_points() -> None:
    with pytest.raises(InsufficientData):
        fit_polynomial([1.0, 2.0], [1.0, 2.0], 2)
    with pytest.raises(InsufficientData):
        fit_polynomial([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], 1)


def test_offset_fit_is_the_mean_correction_with_s_over_sqrt_n() -> None:
    corrections = [0.010, 0.012, 0.011, 0.013]
    fit = fit_polynomial([0.0, 10.0, 20.0, 30.0], corrections, 0)
    stats = repeatability(corrections)
    assert fit.coefficients[0] == pytest.approx(stats.mean, rel=1e-12)
    assert fit.standard_uncertainties[0] == pytest.approx(stats.s_mean, rel=1e-9)
    assert fit.r_squared is None
    assert fit.f_statistic is None


coefficient = st.floats(min_value=-10, max_value=10, allow_nan=False).map(lambda v: round(v, 3))


@settings(max_examples=60, deadline=None)
@given(
    degree=st.integers(min_value=0, max_value=3),
    coefficients=st.lists(coefficient, min_size=4, max_size=4),
    x0=st.sampled_from([0.0, 20.0, -5.0]),
    extra=st.integers(min_value=0, max_value=6),
)
def test_a_fit_of_exact_data_recovers_the_coefficients(
    degree: int, coefficients: list[float], x0: float, extra: int
) -> None:
    true = coefficients[: degree + 1]
    x = [x0 + 0.5 * i - 2 for i in range(degree + 1 + extra)]
    y = [math.fsum(a * (xi - x0) ** j for j, a in enumerate(true)) for xi in x]
    fit = fit_polynomial(x, y, degree, x0=x0)
    scale = max(1.0, *(abs(v) for v in y))
    for got, want in zip(fit.coefficients, true, strict=True):
        assert got == pytest.approx(want, abs=1e-9 * scale * 10**degree)
    assert max(abs(e) for e in fit.residuals) <= 1e-9 * scale


@settings(max_examples=40, deadline=None)
@given(
    y=st.lists(st.floats(min_value=-1, max_value=1, allow_nan=False), min_size=4, max_size=12),
    shift=st.floats(min_value=-50, max_value=50, allow_nan=False),
)
def test_moving_x0_never_changes_a_prediction_or_its_uncertainty(
    y: list[float], shift: float
) -> None:
    x = [float(i) for i in range(len(y))]
    a = fit_polynomial(x, y, 1, x0=0.0)
    b = fit_polynomial(x, y, 1, x0=shift)
    for t in (-3.0, 1.5, 20.0):
        assert b.predict(t) == pytest.approx(a.predict(t), abs=1e-9)
        assert b.standard_uncertainty_at(t) == pytest.approx(a.standard_uncertainty_at(t), abs=1e-9)
