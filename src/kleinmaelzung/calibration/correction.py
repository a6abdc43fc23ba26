"""An approved calibration as a correction of the instrument's live values, pure.

The correction is what the certificate states: C = reference - reading,
against the reading. With a fit in the procedure it is the fitted curve;
without one it is interpolated linearly between the calibration points
(held constant beyond the first and last). The corrected value is
``raw + C(raw)``, rounded to a tenth of the instrument's display step.

A correction is versioned by its calibration (certificate number and
revision) and valid from the moment it was applied until it is withdrawn:
it is never applied to samples taken before, so the past is never rewritten.
"""

from __future__ import annotations

import bisect
import math

import msgspec

from .evaluation import Evaluation, evaluate
from .model import CalibrationRecord
from .records import content_hash


class Correction(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One version of a channel's correction, from one approved calibration revision."""

    instrument_id: str
    channel: str
    #: ``certificate_number/revision``, as samples carry it.
    calibration: str
    #: The approved record's content hash.
    content_hash: str
    #: Hub time (Unix seconds) from which samples are corrected.
    valid_from: float
    #: Coefficients of C(x) = sum a_j (x - x0)^j; empty: interpolate `points`.
    coefficients: tuple[float, ...] = ()
    x0: float = 0.0
    #: (reading, correction) per point, by reading.
    points: tuple[tuple[float, float], ...] = ()
    #: Decimals the corrected value is rounded to.
    decimals: int = 6
    withdrawn_at: float | None = None
    withdrawn_reason: str = ""

    def correction_at(self, raw: float) -> float:
        """C at the raw reading."""
        if self.coefficients:
            # Horner's scheme: per corrected sample, so no generator and no fsum.
            dx = raw - self.x0
            value = 0.0
            for a in reversed(self.coefficients):
                value = value * dx + a
            return value
        readings = [p[0] for p in self.points]
        at = bisect.bisect_left(readings, raw)
        if at == 0:
            return self.points[0][1]
        if at == len(self.points):
            return self.points[-1][1]
        (x1, c1), (x2, c2) = self.points[at - 1], self.points[at]
        return c1 + (c2 - c1) * (raw - x1) / (x2 - x1)

    def apply(self, raw: float) -> float:
        """The corrected value of a raw reading."""
        return round(raw + self.correction_at(raw), self.decimals)


def calibration_id(record: CalibrationRecord) -> str:
    """How samples name a calibration: ``KMZ-2026-0007/1``."""
    return f"{record.certificate_number}/{record.revision}"


def correction_from_record(
    record: CalibrationRecord, valid_from: float, evaluation: Evaluation | None = None
) -> Correction:
    """The correction an approved record states for its instrument's channel."""
    evaluation = evaluation or evaluate(record)
    step = record.instrument.resolution
    decimals = max(0, -math.floor(math.log10(step)) + 1) if step > 0 else 6
    points: tuple[tuple[float, float], ...] = ()
    coefficients: tuple[float, ...] = ()
    x0 = 0.0
    if evaluation.fit is not None:
        coefficients, x0 = evaluation.fit.coefficients, evaluation.fit.x0
    else:
        by_reading: dict[float, float] = {}
        for point in evaluation.final.points:
            by_reading[point.mean] = point.correction
        points = tuple(sorted(by_reading.items()))
    return Correction(
        instrument_id=record.instrument.id,
        channel=record.instrument.channel,
        calibration=calibration_id(record),
        content_hash=content_hash(record),
        valid_from=valid_from,
        coefficients=coefficients,
        x0=x0,
        points=points,
        decimals=decimals,
    )
