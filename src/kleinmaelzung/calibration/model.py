"""The calibration record model: instruments, reference standards, procedures, runs.

Frozen msgspec Structs, strict about unknown fields: a record is data that an
auditor reads years later, so it carries copies (the procedure as used, the
standards as certified then), never references to things that may change.
Times are timezone-aware UTC datetimes; dates are calendar dates.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

import msgspec

from .errors import StandardNotUsable


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base: immutable, strict about unknown fields; defaults left out of the JSON.

    Leaving defaults out keeps content hashes stable across versions: a field
    added later with a default does not change the canonical JSON, so the
    hash of a record approved before it still verifies.
    """


Text = Annotated[str, msgspec.Meta(max_length=2000)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]

# --- registries ---------------------------------------------------------------


class Laboratory(_Struct, frozen=True):
    """The issuing laboratory (ISO/IEC 17025 7.8.2.1 b)."""

    name: Name
    address: Text
    accreditation: Text = ""
    contact: Text = ""


class Customer(_Struct, frozen=True):
    """Who the calibration is for (7.8.2.1 e)."""

    name: Name
    address: Text = ""


class Instrument(_Struct, frozen=True):
    """What a certificate needs to know of the item calibrated (7.8.2.1 f)."""

    id: Name
    description: Text
    manufacturer: Name
    model: Name
    serial_number: Name
    #: Display step d of the channel calibrated, in ``unit``.
    resolution: Positive
    unit: str
    location: Text = ""
    #: Channel of the instrument's samples that is calibrated.
    channel: str = "value"
    #: Kept here, never printed on the certificate (17025 7.8.4.3).
    calibration_interval_days: int | None = None
    next_due: datetime.date | None = None


class ReferenceStandard(_Struct, frozen=True):
    """A reference standard with its certificate: the traceability chain's next link."""

    id: Name
    description: Text
    certificate_number: Name
    #: Expanded uncertainty U from its certificate, at coverage factor ``k``.
    expanded_uncertainty: NonNegative
    k: Positive
    unit: str
    traceability: Text
    #: Last day the standard may be used (its own recalibration due date).
    due: datetime.date
    #: Certified value (a weight's conventional mass), if it has one; a
    #: reference thermometer's value is read at each point instead.
    value: float | None = None
    calibrated_by: Text = ""

    @property
    def standard_uncertainty(self) -> float:
        """u = U/k (GUM 4.3.1): a certificate's U is not a standard uncertainty."""
        return self.expanded_uncertainty / self.k


def check_usable(standard: ReferenceStandard, on: datetime.date) -> None:
    """Refuse a standard past its due date on the day of calibration."""
    if on > standard.due:
        raise StandardNotUsable(
            f"reference standard {standard.id!r} (certificate {standard.certificate_number}) "
            f"was due on {standard.due.isoformat()}; it cannot be used on {on.isoformat()}: "
            "recalibrate it or choose another"
        )


# --- procedures ---------------------------------------------------------------


class Tolerance(_Struct, frozen=True):
    """Maximum permissible error: ``absolute + relative * |nominal|`` (either may be 0)."""

    absolute: NonNegative = 0.0
    relative: NonNegative = 0.0

    def limit(self, nominal: float) -> float:
        """The permissible |error| at ``nominal``."""
        return self.absolute + self.relative * abs(nominal)

    def describe(self, unit: str) -> str:
        """'± 0.002 g', '± 0.01 %', '± (0.002 g + 0.01 %)'."""
        parts = []
        if self.absolute:
            parts.append(f"{self.absolute:g} {unit}".rstrip())
        if self.relative:
            parts.append(f"{self.relative * 100:g} %")
        if not parts:
            return "± 0"
        return "± " + (parts[0] if len(parts) == 1 else "(" + " + ".join(parts) + ")")


class Point(_Struct, frozen=True):
    """One calibration point of a procedure."""

    nominal: float
    #: Overrides the procedure's repetitions and tolerance for this point.
    repetitions: int | None = None
    tolerance: Tolerance | None = None
    #: What the operator applies, e.g. "100 g weight W-100" or "bath at 50 °C".
    apply: Text = ""


class FitModel(_Struct, frozen=True):
    """Curve fitted to the corrections: offset, linear, or polynomial of ``degree``."""

    kind: Literal["none", "offset", "linear", "polynomial"] = "none"
    degree: int | None = None
    #: Fixed point x0 the powers are taken about (GUM H.3's t0).
    x0: float = 0.0

    @property
    def polynomial_degree(self) -> int | None:
        """Degree of the polynomial; None when no fit is asked."""
        if self.kind == "none":
            return None
        if self.kind == "offset":
            return 0
        if self.kind == "linear":
            return 1
        return self.degree


class Stability(_Struct, frozen=True):
    """When a reading may be captured: spread within a window, or the instrument's own flag."""

    #: Number of consecutive samples that must lie within ``max_spread``.
    window: int | None = None
    max_spread: NonNegative | None = None
    #: A boolean channel of the instrument, such as the balance's ``stable``.
    flag: str | None = None


class EnvironmentCondition(_Struct, frozen=True):
    """A condition recorded with the run, live from another instrument or entered."""

    name: Name
    unit: str
    #: "instrument.channel" to read it live; empty: entered by hand.
    source: str = ""
    #: Permitted range; a run outside it is flagged on the certificate.
    minimum: float | None = None
    maximum: float | None = None


class DecisionRule(_Struct, frozen=True):
    """How conformity is stated (ILAC-G8:09/2019).

    ``simple``: pass when |E| <= T (shared risk, guard band w = 0, 4.2.1).
    ``guard_banded``: pass when |E| <= T - U (binary statement, guard band
    w = U, 4.2.2): the probability of a false pass is then below about 2.5 %.
    """

    kind: Literal["simple", "guard_banded"] = "simple"


class Coverage(_Struct, frozen=True):
    """How U is expanded: fixed k (2), or t_95.45 at the Welch-Satterthwaite dof."""

    method: Literal["fixed", "welch_satterthwaite"] = "fixed"
    k: Positive = 2.0


class Procedure(_Struct, frozen=True):
    """A versioned calibration procedure, as loaded from TOML (see `procedures.load`)."""

    name: Name
    version: Annotated[int, msgspec.Meta(ge=1)]
    title: Text
    quantity: Name
    unit: str
    points: tuple[Point, ...]
    tolerance: Tolerance
    repetitions: Annotated[int, msgspec.Meta(ge=1)] = 3
    method: Text = ""
    fit: FitModel = FitModel()
    stability: Stability = Stability()
    environment: tuple[EnvironmentCondition, ...] = ()
    decision_rule: DecisionRule = DecisionRule()
    coverage: Coverage = Coverage()
    #: Resolution as d/sqrt(3) (half-width d) instead of d/sqrt(12); never the default.
    resolution_full_step: bool = False
    #: Count the resolution once, or twice: at the zero reading and at load,
    #: as balance procedures do (EURAMET cg-18), each d/sqrt(12).
    resolution_terms: Literal[1, 2] = 1

    def tolerance_at(self, index: int) -> Tolerance:
        """The tolerance that applies at point ``index``."""
        return self.points[index].tolerance or self.tolerance

    def repetitions_at(self, index: int) -> int:
        """How many readings point ``index`` asks for."""
        return self.points[index].repetitions or self.repetitions


# --- a run ----------------------------------------------------------------------


class RawSample(_Struct, frozen=True):
    """One sample from the live stream, kept with the record behind a captured value."""

    ts: float
    value: float
    stable: bool | None = None


class Reading(_Struct, frozen=True):
    """One accepted reading at a point."""

    value: float
    ts: float
    #: Entered by hand rather than captured from the stream.
    manual: bool = False
    #: The samples the capture looked at (the stability window), newest last.
    raw: tuple[RawSample, ...] = ()
    note: Text = ""


class PointResult(_Struct, frozen=True):
    """Readings taken at one point of the procedure, against a reference value."""

    index: int
    nominal: float
    #: The reference value the instrument was compared with (a weight's
    #: certified mass, the reference thermometer's reading).
    reference_value: float
    #: Ids of the reference standards used at this point.
    standards: tuple[str, ...]
    readings: tuple[Reading, ...]


class EnvironmentRecord(_Struct, frozen=True):
    """A recorded environmental condition: min and max over the run, how taken."""

    name: Name
    unit: str
    minimum: float
    maximum: float
    manual: bool = False
    source: str = ""


class Signature(_Struct, frozen=True):
    """An electronic signature: who, when, what it means, over which content."""

    user: Name
    full_name: Name
    at: datetime.datetime
    meaning: Literal["performed", "approved"]
    #: SHA-256 of the record's canonical content the signer saw.
    content_hash: str


class Revision(_Struct, frozen=True):
    """Which approved record this one corrects, and why."""

    certificate_number: str
    revision: int
    content_hash: str
    reason: Text


Phase = Literal["as_found", "as_left"]


class CalibrationRecord(_Struct, frozen=True):
    """One calibration of one instrument: what was done, read and signed.

    Built up while a run is in progress (`records` functions return new
    records); frozen in content once approved.
    """

    certificate_number: Name
    laboratory: Laboratory
    customer: Customer
    instrument: Instrument
    procedure: Procedure
    standards: tuple[ReferenceStandard, ...]
    #: Day of calibration (7.8.4.1 a is about the date of calibration).
    calibrated_on: datetime.date
    revision: int = 1
    supersedes: Revision | None = None
    as_found: tuple[PointResult, ...] = ()
    as_left: tuple[PointResult, ...] = ()
    #: Adjustment between as-found and as-left, if any (7.8.4.1 b).
    adjustment: Text = ""
    environment: tuple[EnvironmentRecord, ...] = ()
    #: Where the calibration took place (7.8.2.1 c).
    performed_at: Text = ""
    #: Condition of the item when calibrated (7.8.2.1 g), e.g. "in working order".
    item_condition: Text = ""
    #: When the item was received, if it was brought to the laboratory (7.8.2.1 h).
    received_on: datetime.date | None = None
    remarks: Text = ""
    signatures: tuple[Signature, ...] = ()

    def standard(self, standard_id: str) -> ReferenceStandard:
        """The reference standard with this id, as recorded."""
        for standard in self.standards:
            if standard.id == standard_id:
                return standard
        raise StandardNotUsable(
            f"reference standard {standard_id!r} is not among this record's standards"
        )

    def points(self, phase: Phase) -> tuple[PointResult, ...]:
        """As-found or as-left points."""
        return self.as_found if phase == "as_found" else self.as_left

    @property
    def final_phase(self) -> Phase:
        """The readings the conformity statement is about: as-left if taken, else as-found."""
        return "as_left" if self.as_left else "as_found"
