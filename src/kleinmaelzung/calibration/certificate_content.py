"""What a calibration certificate says: every figure and sentence, decided from the record.

`certificate_data` turns a record and its `Evaluation` into the strings the
Typst template lays out (`certificate.py`). Numbers follow GUM 7.2.6: U to two
significant digits, each value of a row to U's last decimal place.

What ISO/IEC 17025:2017 asks of a calibration certificate, and where it is:

- 7.8.2.1 a-p: title; laboratory and address; where the work was done; the
  certificate number, "page x of y" and "End of certificate" on every page;
  customer; method (procedure, version); item (manufacturer, model, serial,
  condition); dates of calibration and issue; results with units; deviations
  (remarks); who authorised it (signatures); that results relate only to the
  item calibrated.
- 7.8.4.1: uncertainty in the measurand's unit; environmental conditions;
  traceability; results before and after adjustment; the adjustment itself.
- 7.8.4.3: no recalibration interval (the due date stays in the instrument's
  record; a test checks the PDF does not show it).
- 7.8.6: the conformity statement names the decision rule and the points.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .evaluation import Evaluation, PointEvaluation
from .model import CalibrationRecord
from .records import approval, content_hash, is_approved, performer
from .uncertainty import COVERAGE_PROBABILITY, report, round_uncertainty


def certificate_data(record: CalibrationRecord, evaluation: Evaluation) -> dict[str, Any]:
    """Everything the template prints, as strings, decided here."""
    procedure = record.procedure
    unit = procedure.unit
    instrument = record.instrument
    final = evaluation.final
    as_found = {p.index: p for p in evaluation.as_found.points} if evaluation.as_found else {}
    as_left = {p.index: p for p in evaluation.as_left.points} if evaluation.as_left else {}
    manual_any = False

    rows = []
    for point in final.points:
        decimals = _decimals(point.expanded)
        found = as_found.get(point.index)
        left = as_left.get(point.index)
        manual = point.manual_readings > 0 or (found is not None and found.manual_readings > 0)
        manual_any = manual_any or manual
        error_text, u_text = report(point.error, point.expanded)
        rows.append(
            {
                "nominal": _plain(point.nominal),
                # Inputs as recorded; results to the last place of their U.
                "reference": _plain(point.reference_value),
                "as_found": _fixed(found.mean, decimals) if found else "—",
                "as_left": _fixed(left.mean, decimals) if left else "—",
                "error": error_text,
                "tolerance": _plain(round(point.tolerance, 12)),
                "expanded": u_text,
                "k": _k_text(point),
                "n": str(point.n),
                "verdict": "pass" if point.verdict == "pass" else "FAIL",
                "manual": manual,
            }
        )
    found_rows = []
    if evaluation.as_found is not None and evaluation.as_left is not None:
        for point in evaluation.as_found.points:
            error_text, u_text = report(point.error, point.expanded)
            found_rows.append(
                {
                    "nominal": _plain(point.nominal),
                    "error": error_text,
                    "expanded": u_text,
                    "tolerance": _plain(round(point.tolerance, 12)),
                    "verdict": "pass" if point.verdict == "pass" else "FAIL",
                }
            )

    worst = max(final.points, key=lambda p: p.expanded)
    budget_rows = [
        {
            "name": c.name,
            "kind": c.kind,
            "u": _sig(c.u),
            "dof": "∞" if c.dof is None else str(c.dof),
            "share": f"{100 * c.u**2 / worst.budget.u_c**2:.1f} %" if worst.budget.u_c else "—",
        }
        for c in worst.budget.components
    ]

    performed = performer(record)
    approved = approval(record)
    signatures = [
        {
            "role": "Calibration performed by"
            if s.meaning == "performed"
            else "Approved and issued by",
            "name": s.full_name,
            "user": s.user,
            "at": s.at.strftime("%Y-%m-%d %H:%M UTC"),
            "meaning": (
                "I performed this calibration and the readings are as taken."
                if s.meaning == "performed"
                else "I reviewed this calibration and authorise the issue of this certificate."
            ),
        }
        for s in (performed, approved)
        if s is not None
    ]
    issue_date = approved.at.date().isoformat() if approved else "not issued (draft)"

    return {
        "draft": not is_approved(record),
        "certificate_number": record.certificate_number,
        "revision": str(record.revision),
        "supersedes": (
            {
                "number": record.supersedes.certificate_number,
                "revision": str(record.supersedes.revision),
                "hash": record.supersedes.content_hash,
                "reason": record.supersedes.reason,
            }
            if record.supersedes
            else None
        ),
        "laboratory": {
            "name": record.laboratory.name,
            "address": record.laboratory.address,
            "accreditation": record.laboratory.accreditation,
            "contact": record.laboratory.contact,
        },
        "customer": {"name": record.customer.name, "address": record.customer.address},
        "performed_at": record.performed_at or "the laboratory's premises",
        "instrument": {
            "id": instrument.id,
            "description": instrument.description,
            "manufacturer": instrument.manufacturer,
            "model": instrument.model,
            "serial_number": instrument.serial_number,
            "location": instrument.location,
            "resolution": f"{_plain(instrument.resolution)} {instrument.unit}",
            "channel": instrument.channel,
            "condition": record.item_condition or "in working order",
        },
        "calibrated_on": record.calibrated_on.isoformat(),
        "received_on": record.received_on.isoformat() if record.received_on else "",
        "issue_date": issue_date,
        "procedure": {
            "name": procedure.name,
            "version": str(procedure.version),
            "title": procedure.title,
            "method": procedure.method,
            "quantity": procedure.quantity,
            "unit": unit,
            "repetitions": str(procedure.repetitions),
            "stability": _stability_text(record),
        },
        "standards": [
            {
                "id": s.id,
                "description": s.description,
                "certificate_number": s.certificate_number,
                "uncertainty": f"{_plain(s.expanded_uncertainty)} {s.unit} (k = {_plain(s.k)})",
                "traceability": s.traceability,
                "calibrated_by": s.calibrated_by,
                "due": s.due.isoformat(),
            }
            for s in record.standards
        ],
        "environment": _environment(record),
        "phase_label": "as left" if record.as_left else "as found",
        "rows": rows,
        "found_rows": found_rows,
        "manual_any": manual_any,
        "adjustment": record.adjustment,
        "budget_point": _plain(worst.nominal),
        "budget": budget_rows,
        "budget_uc": _sig(worst.budget.u_c),
        "budget_k": _k_text(worst),
        "budget_dof": "∞" if worst.budget.dof_eff is None else f"{worst.budget.dof_eff:.1f}",
        "budget_U": report(worst.error, worst.expanded)[1],
        "fit": _fit_data(evaluation, unit),
        "uncertainty_statement": _uncertainty_statement(record),
        "conformity": _conformity(record, evaluation),
        "remarks": record.remarks,
        "signatures": signatures,
        "content_hash": content_hash(record),
    }


def _environment(record: CalibrationRecord) -> list[dict[str, str]]:
    """Each condition as recorded, flagged when outside the procedure's range or missing."""
    asked = {c.name: c for c in record.procedure.environment}
    rows = []
    for e in record.environment:
        how = (
            "entered by hand"
            if e.manual
            else (f"recorded live ({e.source})" if e.source else "recorded")
        )
        condition = asked.get(e.name)
        if condition is not None:
            low = condition.minimum if condition.minimum is not None else e.minimum
            high = condition.maximum if condition.maximum is not None else e.maximum
            if e.minimum < low or e.maximum > high:
                how += f"; OUTSIDE the procedure's range {_plain(low)} to {_plain(high)} {e.unit}"
        rows.append(
            {
                "name": e.name,
                "range": f"{_plain(e.minimum)} to {_plain(e.maximum)} {e.unit}",
                "how": how,
            }
        )
    recorded = {e.name for e in record.environment}
    for name in asked:
        if name not in recorded:
            rows.append(
                {"name": name, "range": "not recorded", "how": "asked for by the procedure"}
            )
    return rows


def _fit_data(evaluation: Evaluation, unit: str) -> dict[str, Any] | None:
    fit = evaluation.fit
    if fit is None:
        return None
    names = [f"a{j}" for j in range(fit.degree + 1)]
    decimals = max(_decimals(p.expanded) for p in evaluation.final.points)
    units = [
        unit if j == 0 else ("1" if j == 1 else f"{unit}{_power(1 - j)}")
        for j in range(fit.degree + 1)
    ]
    terms = " + ".join(
        "a0" if j == 0 else f"a{j}·(I {_MINUS} x0)" + ("" if j == 1 else _power(j))
        for j in range(fit.degree + 1)
    )
    correlations = []
    for i in range(fit.degree + 1):
        for j in range(i + 1, fit.degree + 1):
            correlations.append(f"r(a{i}, a{j}) = {fit.correlation(i, j):.4f}")
    return {
        "model": {0: "offset", 1: "straight line"}.get(
            fit.degree, f"polynomial of degree {fit.degree}"
        ),
        "equation": f"C(I) = {terms}",
        "x0": f"{_plain(fit.x0)} {unit}",
        "coefficients": [
            {"name": n, "value": _sig(a, 6), "u": _sig(u, 2), "unit": un}
            for n, a, u, un in zip(
                names, fit.coefficients, fit.standard_uncertainties, units, strict=True
            )
        ],
        "correlations": ", ".join(correlations),
        "residual_sd": f"{_sig(fit.residual_sd)} {unit}",
        "dof": str(fit.dof),
        "linearity": f"{_sig(evaluation.linearity_error or 0.0)} {unit}",
        "range": f"{_fixed(fit.x_min, decimals)} {unit} to {_fixed(fit.x_max, decimals)} {unit}",
    }


def _uncertainty_statement(record: CalibrationRecord) -> str:
    coverage = record.procedure.coverage
    if coverage.method == "welch_satterthwaite":
        return (
            "The reported expanded uncertainty of measurement U is the combined standard "
            f"uncertainty multiplied by the coverage factor k = t95.45({_NU}eff), the Student "
            f"quantile at the effective degrees of freedom from the Welch{_EN_DASH}Satterthwaite "
            "formula "
            "(given per point), for a coverage probability of approximately 95 %. It was "
            "evaluated in accordance with JCGM 100:2008 (GUM) from the reference standards, "
            "the repeatability of the readings and the resolution of the instrument."
        )
    return (
        "The reported expanded uncertainty of measurement U is the combined standard "
        f"uncertainty multiplied by the coverage factor k = {_plain(coverage.k)}, which for a "
        "normal distribution corresponds to a coverage probability of approximately "
        f"{round(COVERAGE_PROBABILITY * 100)} %. It was evaluated in accordance with "
        "JCGM 100:2008 (GUM) from the reference standards, the repeatability of the readings "
        "and the resolution of the instrument. U does not include the instrument's long-term "
        "drift."
    )


def _conformity(record: CalibrationRecord, evaluation: Evaluation) -> dict[str, str]:
    rule = record.procedure.decision_rule
    tolerance = record.procedure.tolerance.describe(record.procedure.unit)
    unit = record.procedure.unit
    overrides = [
        f"{p.tolerance.describe(unit)} at {_plain(p.nominal)} {unit}"
        for p in record.procedure.points
        if p.tolerance is not None
    ]
    specification = tolerance + (f" ({'; '.join(overrides)})" if overrides else "")
    if rule.kind == "guard_banded":
        rule_text = (
            "Binary statement with guard band w = U (ILAC-G8:09/2019, 4.2.2): a point "
            "conforms when |E| + U ≤ T, i.e. the error lies inside the tolerance narrowed by "
            "the expanded uncertainty; the probability of a false acceptance is then at most "
            "about 2.5 %."
        )
    else:
        rule_text = (
            "Simple acceptance (ILAC-G8:09/2019, 4.2.1, guard band w = 0): a point conforms "
            "when |E| ≤ T. The risk of a false acceptance is shared and reaches up to 50 % for "
            "an error at the limit."
        )
    phase = evaluation.final
    failed = [_plain(p.nominal) for p in phase.points if p.verdict == "fail"]
    label = "as left" if phase.phase == "as_left" else "as found"
    if not failed:
        statement = (
            f"The instrument, {label}, CONFORMS to the tolerance {specification} at every "
            "calibration point."
        )
    else:
        statement = (
            f"The instrument, {label}, DOES NOT CONFORM to the tolerance {specification}: "
            f"the points at {', '.join(failed)} {record.procedure.unit} fail."
        )
    if evaluation.as_found is not None and evaluation.as_left is not None:
        found_failed = [
            _plain(p.nominal) for p in evaluation.as_found.points if p.verdict == "fail"
        ]
        statement += " As found, before adjustment, it " + (
            "conformed at every point."
            if not found_failed
            else f"did not conform at {', '.join(found_failed)} {record.procedure.unit}."
        )
    return {"rule": rule_text, "statement": statement, "specification": specification}


def _stability_text(record: CalibrationRecord) -> str:
    stability = record.procedure.stability
    if stability.flag is not None:
        return f"reading captured when the instrument reports '{stability.flag}'"
    if stability.window is not None and stability.max_spread is not None:
        return (
            f"reading captured when {stability.window} consecutive samples lie within "
            f"{_plain(stability.max_spread)} {record.procedure.unit}"
        )
    return "readings taken as displayed"


def _k_text(point: PointEvaluation) -> str:
    return f"{point.budget.k:.2f}".rstrip("0").rstrip(".")


def _decimals(expanded: float) -> int:
    exponent = round_uncertainty(expanded).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _fixed(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _plain(value: float) -> str:
    """A value as written in the record: 0.002, 200, 21.9 (no exponent, no trailing zeros)."""
    text = format(Decimal(repr(value)).normalize(), "f")
    return text


def _sig(value: float, digits: int = 3) -> str:
    """``digits`` significant digits, exponent form only for very small or large values."""
    if value == 0:
        return "0"
    text = f"{value:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}·10{_power(int(exponent))}"
    return text


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
# Typographic characters, spelled out so that no one mistakes them for ASCII.
_MINUS = "\u2212"
_NU = "\u03bd"
_EN_DASH = "\u2013"


def _power(exponent: int) -> str:
    return str(exponent).translate(_SUPERSCRIPT)
