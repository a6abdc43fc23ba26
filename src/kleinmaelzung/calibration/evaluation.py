"""The numbers of a calibration record: per point, the fit, the conformity decision.

Pure: a record in, an `Evaluation` out, computed the same way every time, so a
certificate re-rendered years later shows the same figures.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .errors import InsufficientData
from .fit import Fit, fit_polynomial
from .model import CalibrationRecord, DecisionRule, Phase, PointResult, Procedure
from .uncertainty import (
    Budget,
    Component,
    combine,
    reference_component,
    repeatability,
    repeatability_component,
    resolution_component,
)

Verdict = Literal["pass", "fail"]


class PointEvaluation(msgspec.Struct, frozen=True):
    """One point's figures."""

    index: int
    nominal: float
    reference_value: float
    n: int
    mean: float
    #: Error of indication E = mean - reference (correction C = -E).
    error: float
    #: Repeatability: experimental standard deviation s of the readings.
    s: float
    budget: Budget
    tolerance: float
    #: Acceptance limit on |E| after the guard band (T, or T - U).
    acceptance_limit: float
    verdict: Verdict
    manual_readings: int

    @property
    def expanded(self) -> float:
        """Expanded uncertainty U of the error."""
        return self.budget.expanded

    @property
    def correction(self) -> float:
        """C = -E."""
        return -self.error


class PhaseEvaluation(msgspec.Struct, frozen=True):
    """As-found or as-left: every point, and whether all pass."""

    phase: Phase
    points: tuple[PointEvaluation, ...]

    @property
    def verdict(self) -> Verdict:
        """Pass only when every point passes."""
        return "pass" if all(p.verdict == "pass" for p in self.points) else "fail"

    @property
    def max_abs_error(self) -> float:
        """Largest |E| over the points."""
        return max(abs(p.error) for p in self.points)


class Evaluation(msgspec.Struct, frozen=True):
    """All the figures of a record."""

    as_found: PhaseEvaluation | None
    as_left: PhaseEvaluation | None
    #: Correction curve fitted to the final phase: C = reference - reading, against the reading.
    fit: Fit | None
    #: Best-fit linearity: the largest |residual| of the fit.
    linearity_error: float | None
    decision_rule: DecisionRule

    @property
    def final(self) -> PhaseEvaluation:
        """The phase the conformity statement is about."""
        final = self.as_left or self.as_found
        if final is None:
            raise InsufficientData("the record has no readings")
        return final

    @property
    def verdict(self) -> Verdict:
        """Overall conformity of the final phase."""
        return self.final.verdict


def evaluate(record: CalibrationRecord) -> Evaluation:
    """Compute every figure of a record under its procedure."""
    procedure = record.procedure
    phases: dict[Phase, PhaseEvaluation | None] = {"as_found": None, "as_left": None}
    for phase in ("as_found", "as_left"):
        points = record.points(phase)
        if points:
            phases[phase] = PhaseEvaluation(
                phase=phase,
                points=tuple(evaluate_point(record, point) for point in points),
            )
    final = phases["as_left"] or phases["as_found"]
    fit: Fit | None = None
    degree = procedure.fit.polynomial_degree
    if final is not None and degree is not None and len(final.points) > degree:
        readings = [p.mean for p in final.points]
        corrections = [p.reference_value - p.mean for p in final.points]
        fit = fit_polynomial(readings, corrections, degree, x0=procedure.fit.x0)
    return Evaluation(
        as_found=phases["as_found"],
        as_left=phases["as_left"],
        fit=fit,
        linearity_error=fit.max_abs_residual if fit is not None else None,
        decision_rule=procedure.decision_rule,
    )


def evaluate_point(record: CalibrationRecord, point: PointResult) -> PointEvaluation:
    """Mean, error, repeatability, uncertainty budget and verdict of one point."""
    procedure = record.procedure
    values = [r.value for r in point.readings]
    if not values:
        raise InsufficientData(f"point {point.index + 1} ({point.nominal:g}) has no readings")
    stats = repeatability(values)
    components: list[Component] = [
        reference_component(
            record.standard(sid).expanded_uncertainty,
            record.standard(sid).k,
            name=f"reference {sid}",
        )
        for sid in point.standards
    ]
    if stats.dof:
        components.append(repeatability_component(stats))
    resolution = record.instrument.resolution
    full_step = procedure.resolution_full_step
    if procedure.resolution_terms == 2:
        components.append(
            resolution_component(resolution, full_step=full_step, name="resolution at zero")
        )
        components.append(
            resolution_component(resolution, full_step=full_step, name="resolution at load")
        )
    else:
        components.append(resolution_component(resolution, full_step=full_step))
    budget = combine(
        components,
        k=procedure.coverage.k,
        welch_satterthwaite=procedure.coverage.method == "welch_satterthwaite",
    )
    error = stats.mean - point.reference_value
    tolerance = _tolerance(procedure, point)
    limit = acceptance_limit(procedure.decision_rule, tolerance, budget.expanded)
    return PointEvaluation(
        index=point.index,
        nominal=point.nominal,
        reference_value=point.reference_value,
        n=stats.n,
        mean=stats.mean,
        error=error,
        s=stats.s,
        budget=budget,
        tolerance=tolerance,
        acceptance_limit=limit,
        verdict=decide(error, limit),
        manual_readings=sum(1 for r in point.readings if r.manual),
    )


def acceptance_limit(rule: DecisionRule, tolerance: float, expanded: float) -> float:
    """The limit on |E|: T for simple acceptance, T - U with a guard band w = U."""
    if rule.kind == "guard_banded":
        return tolerance - expanded
    return tolerance


def decide(error: float, limit: float) -> Verdict:
    """Pass when |E| lies within the acceptance limit; a negative limit passes nothing."""
    # A tiny relative slack: E = 0.002 against T = 0.002 must pass although
    # 50.002 - 50.000 is 0.0020000000000024 in binary.
    slack = 1e-12 * max(abs(error), abs(limit), 1e-300)
    return "pass" if limit >= 0 and abs(error) <= limit + slack else "fail"


def _tolerance(procedure: Procedure, point: PointResult) -> float:
    if 0 <= point.index < len(procedure.points):
        return procedure.tolerance_at(point.index).limit(point.nominal)
    return procedure.tolerance.limit(point.nominal)
