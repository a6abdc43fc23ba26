"""A worked example: the demo lab's balance calibrated at ten points, signed and approved.

Used by the tests, the benchmark and the sample certificate in
``docs/calibration/``; every number is fixed, so the record (and its PDF) is
the same on every run.
"""

from __future__ import annotations

import datetime

from .model import (
    CalibrationRecord,
    Customer,
    EnvironmentRecord,
    Instrument,
    Laboratory,
    PointResult,
    RawSample,
    Reading,
    ReferenceStandard,
)
from .procedures import parse_procedure
from .records import add_point, approve, set_adjustment, set_environment, sign_performed

BALANCE_PROCEDURE = """\
name = "balance-linearity"
version = 2
title = "Linearity and repeatability of an electronic balance, 0 g to 200 g"
quantity = "mass"
unit = "g"
method = '''Comparison with OIML class F1 weights (EURAMET cg-18 scheme, reduced); \
readings taken when the balance reports a stable value.'''
repetitions = 3
tolerance = { absolute = 0.002 }
fit = { kind = "linear" }
stability = { flag = "stable" }
decision_rule = { kind = "guard_banded" }
coverage = { method = "welch_satterthwaite" }

[[points]]
nominal = 0.0
apply = "empty pan"

[[points]]
nominal = 20.0
apply = "20 g weight W-020"

[[points]]
nominal = 40.0
apply = "20 g + 20 g* weights"

[[points]]
nominal = 60.0
apply = "50 g + 10 g weights"

[[points]]
nominal = 80.0
apply = "50 g + 20 g + 10 g weights"

[[points]]
nominal = 100.0
apply = "100 g weight W-100"

[[points]]
nominal = 120.0
apply = "100 g + 20 g weights"

[[points]]
nominal = 150.0
apply = "100 g + 50 g weights"

[[points]]
nominal = 180.0
apply = "100 g + 50 g + 20 g + 10 g weights"

[[points]]
nominal = 200.0
apply = "200 g weight W-200"
tolerance = { absolute = 0.003 }

[[environment]]
name = "air temperature"
unit = "°C"
source = "germination-chamber.temperature"
minimum = 18.0
maximum = 26.0

[[environment]]
name = "relative humidity"
unit = "%rh"
source = "germination-chamber.humidity"
minimum = 30.0
maximum = 70.0
"""

#: Certified conventional mass of each point's weights minus nominal, in mg.
_REFERENCE_OFFSETS_MG = [0.0, 0.03, -0.02, 0.05, 0.04, 0.08, 0.06, 0.11, 0.09, 0.15]
#: Span error before and after the adjustment, in mg per 100 g.
_SPAN_MG_PER_100G = {"as_found": 6.0, "as_left": 0.1}


def _reading_g(reference: float, phase: str, index: int, repetition: int) -> float:
    """What the display showed: span error plus a fixed -1/0/+1 mg scatter, to 1 mg."""
    scatter_mg = (index * 7 + repetition * 3) % 3 - 1
    if phase == "as_left":
        scatter_mg = index % 3 - 1 if repetition == 1 else 0
    span_mg = _SPAN_MG_PER_100G[phase] * reference / 100
    return round(reference + (span_mg + scatter_mg) / 1000, 3)


CALIBRATED_ON = datetime.date(2026, 11, 24)
_START = datetime.datetime(2026, 11, 24, 9, 0, tzinfo=datetime.UTC)


def balance_standards() -> tuple[ReferenceStandard, ...]:
    """The weight set and the reference thermo-hygrometer of the example."""
    return (
        ReferenceStandard(
            id="W-F1-SET-07",
            description="Weight set 1 mg to 200 g, OIML R 111 class F1, stainless steel",
            certificate_number="DAkkS D-K-15071-01-00 2026-0412",
            expanded_uncertainty=0.00010,
            k=2.0,
            unit="g",
            traceability=(
                "PTB national mass standard via DAkkS-accredited laboratory D-K-15071-01-00"
            ),
            due=datetime.date(2027, 4, 30),
            calibrated_by="Kalibrierlabor Masse GmbH",
        ),
    )


def balance_record(
    certificate_number: str = "KMZ-2026-0042", points: int = 10
) -> CalibrationRecord:
    """A draft record of the example balance, as-found and as-left, ``points`` points (<= 10)."""
    procedure = parse_procedure(BALANCE_PROCEDURE, source="balance-linearity.toml")
    if points < len(procedure.points):
        import msgspec

        procedure = msgspec.structs.replace(procedure, points=procedure.points[:points])
    record = CalibrationRecord(
        certificate_number=certificate_number,
        laboratory=Laboratory(
            name="Kleinmälzung Versuchslabor",
            address="Malzweg 3, 85354 Freising, Germany",
            accreditation="Example only: not an accredited laboratory",
            contact="labor@kleinmaelzung.example",
        ),
        customer=Customer(name="Kleinmälzung Versuchslabor (internal)", address="Malzweg 3"),
        instrument=Instrument(
            id="balance",
            description="Precision balance for moisture determination",
            manufacturer="Sartorius",
            model="Quintix 213-1S (simulated)",
            serial_number="0038472915",
            resolution=0.001,
            unit="g",
            location="Lab 1, bench 2",
            channel="mass",
            calibration_interval_days=365,
            next_due=datetime.date(2027, 11, 24),
        ),
        procedure=procedure,
        standards=balance_standards(),
        calibrated_on=CALIBRATED_ON,
        performed_at="Customer's laboratory: Lab 1, bench 2",
    )
    for phase in ("as_found", "as_left"):
        for index, point in enumerate(procedure.points):
            reference = round(point.nominal + _REFERENCE_OFFSETS_MG[index] / 1000, 6)
            start = _START.timestamp() + 60 * index + (3600 if phase == "as_left" else 0)
            readings = []
            for repetition in range(procedure.repetitions_at(index)):
                value = _reading_g(reference, phase, index, repetition)
                ts = start + 10 * repetition
                # The stability window behind the capture: the balance's last
                # two samples, the second flagged stable.
                raw = (
                    RawSample(ts=ts - 0.5, value=value + 0.001, stable=False),
                    RawSample(ts=ts, value=value, stable=True),
                )
                readings.append(Reading(value=value, ts=ts, raw=raw))
            record = add_point(
                record,
                phase,
                PointResult(
                    index=index,
                    nominal=point.nominal,
                    reference_value=reference,
                    standards=("W-F1-SET-07",) if point.nominal else (),
                    readings=tuple(readings),
                ),
            )
    record = set_adjustment(
        record, "Span adjusted with the balance's internal calibration weight after as-found."
    )
    record = set_environment(
        record,
        EnvironmentRecord(
            name="air temperature",
            unit="°C",
            minimum=21.2,
            maximum=21.9,
            source="germination-chamber.temperature",
        ),
    )
    return set_environment(
        record,
        EnvironmentRecord(
            name="relative humidity",
            unit="%rh",
            minimum=44.0,
            maximum=47.0,
            source="germination-chamber.humidity",
        ),
    )


def approved_balance_record(
    certificate_number: str = "KMZ-2026-0042", points: int = 10
) -> CalibrationRecord:
    """The example record, signed as performed and approved by a second person."""
    record = sign_performed(
        balance_record(certificate_number, points),
        user="amaier",
        full_name="Anna Maier",
        at=datetime.datetime(2026, 11, 24, 11, 30, tzinfo=datetime.UTC),
    )
    return approve(
        record,
        user="jkoch",
        full_name="Jonas Koch",
        at=datetime.datetime(2026, 11, 25, 8, 15, tzinfo=datetime.UTC),
    )
