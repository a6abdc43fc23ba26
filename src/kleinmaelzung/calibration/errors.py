"""The calibration package's exception tree; each carries a snake_case ``code``.

CalibrationError
├── ProcedureError          a procedure file is wrong (says file, key, expectation)
├── StandardNotUsable       a reference standard is expired or unknown
├── InsufficientData        too few readings or points for the arithmetic asked
├── RecordLocked            an approved record was asked to change
├── SignatureError          a signature is out of order or does not match the content
├── CalibrationFailed       a failed calibration's correction was asked to be applied
└── RenderError             the certificate could not be produced (Typst failed)
"""

from __future__ import annotations

from ..protocol import KmzError


class CalibrationError(KmzError):
    """Base of the calibration package's exceptions."""

    code = "calibration_error"


class ProcedureError(CalibrationError):
    """A procedure file or value is wrong; the message names file, key and expectation."""

    code = "invalid_procedure"


class StandardNotUsable(CalibrationError):
    """A reference standard cannot be used: past its due date, or not registered."""

    code = "reference_standard_not_usable"


class InsufficientData(CalibrationError):
    """The arithmetic asked for needs more readings or points than given."""

    code = "insufficient_data"


class RecordLocked(CalibrationError):
    """An approved record is immutable; corrections make a new revision."""

    code = "record_locked"


class SignatureError(CalibrationError):
    """A signature is out of order, or the content no longer matches its hash."""

    code = "signature_invalid"


class CalibrationFailed(CalibrationError):
    """The record's final result is a fail: its correction is not calibrated data."""

    code = "calibration_failed"


class RenderError(CalibrationError):
    """The certificate PDF could not be produced."""

    code = "render_failed"
