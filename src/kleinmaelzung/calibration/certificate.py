"""A calibration record as a certificate PDF, typeset by Typst (extra ``calibration``).

Python decides every figure and every word that depends on the record
(`certificate_content`); the Typst template in ``templates/`` only lays them
out. The same record gives the same bytes: the PDF's creation date is the
approval time, only Typst's embedded fonts are used (never the machine's),
and the plot's SVG prints fixed decimals.
"""

from __future__ import annotations

import datetime
import json
from importlib import resources
from pathlib import Path

from .certificate_content import certificate_data
from .errors import RenderError
from .evaluation import Evaluation, evaluate
from .model import CalibrationRecord
from .plot import error_plot_svg
from .records import approval, verify

#: Units whose thousandth has a prefixed name, for the plot's axis.
_MILLI = {"g": "mg", "V": "mV", "A": "mA", "m": "mm", "s": "ms", "Pa": "mPa", "bar": "mbar"}


class CertificateRenderer:
    """Typsets certificates; keep one to reuse Typst's fonts and parsed template."""

    def __init__(self) -> None:
        try:
            import typst
        except ImportError as exc:  # pragma: no cover - the extra is in dev
            raise RenderError(
                "certificates need Typst: pip install 'kleinmaelzung[calibration]'"
            ) from exc
        self._typst = typst
        template = resources.files(__package__) / "templates" / "certificate.typ"
        self._template_dir = Path(str(template)).parent
        # Embedded fonts only: a machine's own fonts would change the bytes.
        self._compiler = typst.Compiler(
            input=str(self._template_dir / "certificate.typ"),
            root=str(self._template_dir),
            ignore_system_fonts=True,
        )

    def render(self, record: CalibrationRecord) -> bytes:
        """The certificate of ``record`` as PDF bytes; a draft is marked as such."""
        verify(record)
        evaluation = evaluate(record)
        data = certificate_data(record, evaluation)
        scale, scale_unit = _plot_scale(record, evaluation)
        svg = error_plot_svg(
            evaluation, unit=record.procedure.unit, scale=scale, scale_unit=scale_unit
        )
        signed = approval(record)
        timestamp = (
            signed.at
            if signed is not None
            else datetime.datetime.combine(record.calibrated_on, datetime.time(), datetime.UTC)
        )
        try:
            pdf = self._compiler.compile(
                format="pdf",
                sys_inputs={"data": json.dumps(data, sort_keys=True), "plot": svg},
                # Typst takes whole seconds; signatures may carry microseconds.
                timestamp=timestamp.replace(microsecond=0),
            )
        except self._typst.TypstError as exc:
            raise RenderError(f"Typst could not typeset the certificate: {exc}") from exc
        assert isinstance(pdf, bytes)
        return pdf


def render_certificate(record: CalibrationRecord) -> bytes:
    """One certificate as PDF bytes (builds a renderer; keep a `CertificateRenderer` for many)."""
    return CertificateRenderer().render(record)


def _plot_scale(record: CalibrationRecord, evaluation: Evaluation) -> tuple[float, str]:
    unit = record.procedure.unit
    largest = max(p.tolerance for p in evaluation.final.points)
    if unit in _MILLI and 0 < largest < 0.05:
        return 1000.0, _MILLI[unit]
    return 1.0, unit
