"""The arithmetic against the published reference cases (data/reference-cases.json).

Each expected value is compared to the file's tolerance; values marked
"published" must also round to what the source prints; "negative check"
values are what known mistakes give, and we must not give them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from kleinmaelzung.calibration import (
    combine,
    coverage_factor,
    fit_polynomial,
    repeatability,
    report,
    student_t_quantile,
)
from kleinmaelzung.calibration.uncertainty import (
    reference_component,
    repeatability_component,
    resolution_component,
)

CASES = {
    case["id"]: case
    for case in json.loads((Path(__file__).parent / "data" / "reference-cases.json").read_text())[
        "cases"
    ]
}


def check(expected: dict[str, Any], got: float) -> None:
    """Within the file's tolerance; and, when published, within half a printed digit."""
    value = expected["value"]
    tol = expected.get("tol", {})
    allowed = max(tol.get("abs", 0.0), tol.get("rel", 0.0) * abs(value))
    assert abs(got - value) <= allowed, f"got {got!r}, expected {value!r} +- {allowed:g}"
    if "published" in expected:
        published = float(expected["published"])
        assert abs(got - published) <= expected["published_tol"], (
            f"got {got!r}, the source prints {expected['published']}"
        )


def check_not(expected: dict[str, Any], got: float) -> None:
    """A negative check: far from the wrong value (by more than its tolerance, many times)."""
    value = expected["value"]
    allowed = max(expected["tol"].get("abs", 0.0), expected["tol"].get("rel", 0.0) * abs(value))
    assert abs(got - value) > 1000 * allowed, f"{got!r} is the known wrong answer {value!r}"


# --- GUM H.3 ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def h3() -> dict[str, Any]:
    return CASES["gum-h3-thermometer"]


def test_gum_h3_line_coefficients_uncertainties_and_correlation(h3: dict[str, Any]) -> None:
    inputs, expected = h3["inputs"], h3["expected"]
    fit = fit_polynomial(inputs["x"], inputs["y"], 1, x0=inputs["t0"])
    check(expected["y1"], fit.coefficients[0])
    check(expected["u_y1"], fit.standard_uncertainties[0])
    check(expected["y2"], fit.coefficients[1])
    check(expected["u_y2"], fit.standard_uncertainties[1])
    check(expected["r_y1_y2"], fit.correlation(0, 1))
    check(expected["cov_y1_y2"], fit.covariance[0][1])
    check(expected["sum_sq_residuals"], fit.ss_residual)
    check(expected["s"], fit.residual_sd)
    assert fit.dof == expected["nu"]["value"]
    check(expected["max_abs_residual"], fit.max_abs_residual)
    assert max(range(11), key=lambda k: abs(fit.residuals[k])) == 3  # k = 4, 1-based


def test_gum_h3_prediction_at_30_degc_with_covariance(h3: dict[str, Any]) -> None:
    inputs, expected = h3["inputs"], h3["expected"]
    fit = fit_polynomial(inputs["x"], inputs["y"], 1, x0=inputs["t0"])
    t = inputs["t_eval"]
    u = fit.standard_uncertainty_at(t)
    check(expected["b_at_t_eval"], fit.predict(t))
    check(expected["u_b_at_t_eval"], u)
    check(expected["U_b_at_t_eval_k2"], 2 * u)
    k = coverage_factor(fit.dof)
    check(expected["k_t95_45_nu9"], k)
    check(expected["k_t95_45_nu9"], student_t_quantile(0.9545, 9))
    check(expected["U_b_at_t_eval_k_t"], k * u)
    check(expected["u_single_new_observation_at_t_eval"], math.hypot(u, fit.residual_sd))
    check_not(expected["u_b_at_t_eval_WRONG_without_covariance"], u)
    # 30 degC lies outside the readings (21.5 to 26.5): marked as extrapolated.
    assert fit.extrapolated(t)
    assert not fit.extrapolated(24.0)


def test_gum_h3_fitted_values_and_residuals_per_point(h3: dict[str, Any]) -> None:
    inputs, per_point = h3["inputs"], h3["per_point"]
    fit = fit_polynomial(inputs["x"], inputs["y"], 1, x0=inputs["t0"])
    tol = per_point["tol"]
    for k, x in enumerate(inputs["x"]):
        predicted = fit.predict(x)
        for got, want in (
            (predicted, per_point["predicted_b"][k]),
            (fit.residuals[k], per_point["residual_b_minus_predicted"][k]),
        ):
            assert abs(got - want) <= max(tol["abs"], tol["rel"] * abs(want))
        assert f"{predicted:.4f}" == per_point["predicted_b_rounded_4dp"][k]
        assert f"{fit.residuals[k]:+.4f}" == per_point["residual_rounded_4dp"][k].replace(
            "-0.0000", "+0.0000"
        )


def test_gum_h3_moving_t0_to_the_mean_changes_only_the_intercept(h3: dict[str, Any]) -> None:
    inputs, expected = h3["inputs"], h3["expected"]
    at_20 = fit_polynomial(inputs["x"], inputs["y"], 1, x0=inputs["t0"])
    t_mean = math.fsum(inputs["x"]) / len(inputs["x"])
    at_mean = fit_polynomial(inputs["x"], inputs["y"], 1, x0=t_mean)
    check(expected["y1_at_t0_equal_t_mean"], at_mean.coefficients[0])
    check(expected["u_y1_at_t0_equal_t_mean"], at_mean.standard_uncertainties[0])
    assert abs(at_mean.correlation(0, 1)) < 1e-12
    for t in (21.0, 24.0, 30.0):
        assert at_mean.predict(t) == pytest.approx(at_20.predict(t), rel=1e-12)
        assert at_mean.standard_uncertainty_at(t) == pytest.approx(
            at_20.standard_uncertainty_at(t), rel=1e-9
        )


# --- NIST StRD Norris -----------------------------------------------------------------


def test_nist_norris_certified_values() -> None:
    case = CASES["nist-strd-norris"]
    inputs, expected = case["inputs"], case["expected"]
    fit = fit_polynomial(inputs["x"], inputs["y"], 1)
    check(expected["B0"], fit.coefficients[0])
    check(expected["sd_B0"], fit.standard_uncertainties[0])
    check(expected["B1"], fit.coefficients[1])
    check(expected["sd_B1"], fit.standard_uncertainties[1])
    check(expected["residual_sd"], fit.residual_sd)
    assert fit.r_squared is not None
    check(expected["r_squared"], fit.r_squared)
    assert fit.degree == expected["df_regression"]["value"]
    assert fit.ss_regression is not None
    check(expected["ss_regression"], fit.ss_regression)
    check(expected["ms_regression"], fit.ss_regression / fit.degree)
    assert fit.f_statistic is not None
    check(expected["F"], fit.f_statistic)
    assert fit.dof == expected["df_residual"]["value"]
    check(expected["ss_residual"], fit.ss_residual)
    check(expected["ms_residual"], fit.ss_residual / fit.dof)
    check(expected["cov_B0_B1"], fit.covariance[0][1])
    check(expected["r_B0_B1"], fit.correlation(0, 1))
    check(expected["y_hat_at_x_500"], fit.predict(500.0))
    check(expected["u_y_hat_at_x_500"], fit.standard_uncertainty_at(500.0))


# --- GUM H.2 ---------------------------------------------------------------------------


def test_gum_h2_repeatability() -> None:
    case = CASES["gum-h2-repeatability-voltage"]
    expected = case["expected"]
    result = repeatability(case["inputs"]["readings"])
    check(expected["mean"], result.mean)
    check(expected["s"], result.s)
    check(expected["s_mean"], result.s_mean)
    assert result.dof == expected["nu"]["value"]


# --- one point's budget ------------------------------------------------------------------


def test_point_budget_thermometer_at_50_degc() -> None:
    case = CASES["point-budget-thermometer-50C"]
    inputs, expected = case["inputs"], case["expected"]
    readings = repeatability(inputs["readings_I"])
    reference = reference_component(inputs["U_ref"], inputs["k_ref"])
    repeat = repeatability_component(readings)
    resolution = resolution_component(inputs["resolution_d"])
    budget = combine([reference, repeat, resolution], k=inputs["k"])
    error = readings.mean - inputs["x_ref"]
    check(expected["mean_I"], readings.mean)
    check(expected["s_I"], readings.s)
    check(expected["error_E"], error)
    check(expected["correction_C"], -error)
    check(expected["u_ref"], reference.u)
    check(expected["u_rep"], repeat.u)
    check(expected["u_res"], resolution.u)
    check(expected["u_c"], budget.u_c)
    check(expected["U_k2"], budget.expanded)
    assert budget.dof_eff is not None
    check(expected["nu_eff"], budget.dof_eff)
    for wrong in (
        "U_k2_WRONG_s_not_divided_by_sqrt_n",
        "U_k2_WRONG_U_ref_not_divided_by_k",
        "U_k2_WRONG_n_instead_of_n_minus_1",
    ):
        check_not(expected[wrong], budget.expanded)
    assert report(error, budget.expanded) == (
        expected["E_reported"]["value"],
        expected["U_k2_reported"]["value"],
    )
    # Shares of u_c^2 as the case prints them: 85.2 % / 7.7 % / 7.1 %.
    assert [
        round(100 * budget.share(n), 1) for n in ("reference", "repeatability", "resolution")
    ] == [
        85.2,
        7.7,
        7.1,
    ]
    # The large dof keeps k = 2 close to t_95.45: 2.0016.
    ws = combine([reference, repeat, resolution], welch_satterthwaite=True)
    assert f"{ws.k:.4f}" == "2.0016"


def test_point_budget_full_step_resolution_is_the_cautious_option() -> None:
    case = CASES["point-budget-thermometer-50C"]
    inputs = case["inputs"]
    readings = repeatability(inputs["readings_I"])
    budget = combine(
        [
            reference_component(inputs["U_ref"], inputs["k_ref"]),
            repeatability_component(readings),
            resolution_component(inputs["resolution_d"], full_step=True),
        ]
    )
    assert f"{budget.expanded:.4f}" == "0.0239"
