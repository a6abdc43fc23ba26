"""The shapes of the hub's calibration API (``/api/calibrations``), shared by hub and client.

Requests are strict (unknown fields refused, so a typo is an error, not a
silent default); answers carry the record as stored with its content hash,
and a summary of its figures for a terminal or a page.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

import msgspec

from .correction import Correction
from .evaluation import Evaluation
from .model import CalibrationRecord, Customer, Instrument, Phase, Reading

Text = Annotated[str, msgspec.Meta(max_length=2000)]
Index = Annotated[int, msgspec.Meta(ge=0)]


class _Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base of request bodies."""


class StartRun(_Request, frozen=True):
    """``POST /api/calibrations``: start a calibration of an instrument under a procedure."""

    instrument: str
    procedure: str
    #: The procedure's version; the highest by default.
    version: int | None = None
    #: Ids of the registered reference standards used (each must be within its due date).
    standards: tuple[str, ...] = ()
    customer: Customer | None = None
    performed_at: Text = ""
    item_condition: Text = ""
    received_on: datetime.date | None = None
    remarks: Text = ""


class Capture(_Request, frozen=True):
    """``POST .../capture``: take the next reading of a point from the instrument's live samples."""

    phase: Phase
    index: Index
    #: The reference value at this point (a weight's conventional mass); the nominal by default.
    reference_value: float | None = None
    #: The standards used at this point; by default every standard of the run
    #: (none at a nominal of zero).
    standards: tuple[str, ...] | None = None
    #: Only samples taken at or after this time (Unix seconds) count: when the
    #: operator said the load was applied. Older samples show the previous load.
    not_before: float | None = None


class ManualReading(_Request, frozen=True):
    """``POST .../readings``: a reading entered by hand, marked so on the certificate."""

    phase: Phase
    index: Index
    value: float
    reference_value: float | None = None
    standards: tuple[str, ...] | None = None
    note: Text = ""


class EnvironmentEntry(_Request, frozen=True):
    """``POST .../environment``: a condition entered by hand (min and max over the run)."""

    name: str
    minimum: float
    maximum: float


class Adjustment(_Request, frozen=True):
    """``POST .../adjustment``: what was adjusted between as-found and as-left."""

    text: Text


class SignRequest(_Request, frozen=True):
    """``POST .../sign`` and ``.../approve``: the signer's full name as printed (the user
    is the authenticated one)."""

    full_name: str = ""


class ApproveRequest(SignRequest, frozen=True):
    """``POST .../approve``: the approver's signature, and whether the correction applies.

    A record whose final result fails is approved only with
    ``apply_correction=False`` (signed as a failure: kept, applied to
    nothing); asked to apply, it is refused with ``calibration_failed``.
    """

    apply_correction: bool = True


class ReasonRequest(_Request, frozen=True):
    """``POST .../correct`` and ``.../withdraw``: why."""

    reason: Text


class PointSummary(msgspec.Struct, frozen=True):
    """One point's figures, as `kmz calibration show` prints them."""

    phase: Phase
    index: int
    nominal: float
    reference_value: float
    n: int
    mean: float
    error: float
    s: float
    expanded: float
    k: float
    tolerance: float
    verdict: str
    manual_readings: int


class RecordView(msgspec.Struct, frozen=True, omit_defaults=True):
    """``GET /api/calibrations/{id}`` and the answer of every step: the record and its state."""

    record: CalibrationRecord
    content_hash: str
    approved: bool
    #: Per point figures of both phases, once there are readings.
    points: tuple[PointSummary, ...] = ()
    #: Overall conformity of the final phase ("pass", "fail"), once there are readings.
    verdict: str | None = None
    #: The correction this record applies to the stream, if applied.
    correction: Correction | None = None
    #: For a capture: the reading just taken.
    captured: Reading | None = None


class RecordSummary(msgspec.Struct, frozen=True):
    """One revision of one calibration, as a list shows it (the store's rows, the API's list)."""

    certificate_number: str
    revision: int
    instrument_id: str
    calibrated_on: datetime.date
    approved: bool
    content_hash: str


#: The name the client library knows it by; the same shape, defined once.
RecordSummaryView = RecordSummary


class DueEntry(msgspec.Struct, frozen=True):
    """An instrument due for calibration (`GET /api/calibrations/due`)."""

    instrument: Instrument
    next_due: datetime.date
    #: Negative when overdue.
    days_left: int
    state: Literal["overdue", "due"]


def summarize(evaluation: Evaluation) -> tuple[PointSummary, ...]:
    """Per point figures of an evaluation, both phases."""
    points: list[PointSummary] = []
    for phase in (evaluation.as_found, evaluation.as_left):
        if phase is None:
            continue
        for p in phase.points:
            points.append(
                PointSummary(
                    phase=phase.phase,
                    index=p.index,
                    nominal=p.nominal,
                    reference_value=p.reference_value,
                    n=p.n,
                    mean=p.mean,
                    error=p.error,
                    s=p.s,
                    expanded=p.expanded,
                    k=p.budget.k,
                    tolerance=p.tolerance,
                    verdict=p.verdict,
                    manual_readings=p.manual_readings,
                )
            )
    return tuple(points)
