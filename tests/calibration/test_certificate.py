"""The certificate PDF: every field ISO/IEC 17025 7.8 asks for, byte-identical, looked at.

The sample in docs/calibration/ is this module's output: regenerate it with
``KMZ_WRITE_SAMPLE=1 .venv/bin/pytest tests/calibration/test_certificate.py -k sample``.
"""

from __future__ import annotations

import datetime
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest

pytest.importorskip("typst", reason="certificates need the calibration extra")
pypdf = pytest.importorskip("pypdf")

from kleinmaelzung.calibration import (  # noqa: E402
    PointResult,
    Reading,
    SignatureError,
    add_point,
    approve,
    correct,
    set_environment,
    sign_performed,
)
from kleinmaelzung.calibration.certificate import (  # noqa: E402
    CertificateRenderer,
    render_certificate,
)
from kleinmaelzung.calibration.examples import (  # noqa: E402
    approved_balance_record,
    balance_record,
)
from kleinmaelzung.calibration.model import EnvironmentRecord  # noqa: E402

DOCS = Path(__file__).parents[2] / "docs" / "calibration"
SAMPLE_PDF = DOCS / "sample-certificate.pdf"
SAMPLE_PNG = DOCS / "sample-certificate-page1.png"
AT = datetime.datetime(2026, 11, 25, 9, 0, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def renderer() -> CertificateRenderer:
    return CertificateRenderer()


@pytest.fixture(scope="module")
def pdf(renderer: CertificateRenderer) -> bytes:
    return renderer.render(approved_balance_record())


@pytest.fixture(scope="module")
def text(pdf: bytes) -> str:
    return flat(pdf)


def pages_text(pdf: bytes) -> list[str]:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return [page.extract_text() for page in reader.pages]


def flat(pdf: bytes) -> str:
    return re.sub(r"\s+", " ", " ".join(pages_text(pdf)))


REQUIRED = {
    # 7.8.2.1 a, b, c: title, laboratory, place.
    "title": "Calibration Certificate",
    "laboratory": "Kleinmälzung Versuchslabor, Malzweg 3, 85354 Freising, Germany",
    "place": "Place of calibration Customer's laboratory: Lab 1, bench 2",
    # d: unique identification (each page is checked below) and the end.
    "certificate number": "Certificate number KMZ-2026-0042",
    "end": "End of certificate",
    # e: customer.
    "customer": "Customer Kleinmälzung Versuchslabor (internal)",
    # f: method, procedure and version.
    "procedure": "balance-linearity, version 2",
    "method": "Comparison with OIML class F1 weights",
    "quantity": "mass in g; 3 readings per point; reading captured when the instrument reports",
    # g: the item.
    "manufacturer": "Sartorius, Quintix 213-1S (simulated)",
    "serial": "Serial number 0038472915",
    "condition": "Condition in working order",
    # i, j: dates.
    "calibrated on": "Date of calibration 2026-11-24",
    "issued on": "Date of issue 2026-11-25",
    # l: results relate only to the item.
    "relates only": "The results relate only to the item calibrated",
    "reproduction": "shall not be reproduced except in full",
    # m: results with units; the points table.
    "table header": "Nominal Reference As found As left Error E Tolerance ±T U (k) Result",
    # Each row to the last place of its U (GUM 7.2.6); k from nu_eff where s > 0.
    "row 100 g": "100 100.00008 100.0070 100.0003 0.0003 0.002 0.0011 (2.52) pass",
    "row 150 g": "150 150.00011 150.00900 150.00000 -0.00011 0.002 0.00059 (2) pass",
    "row 200 g": "200 200.00015 200.0110 199.9997 -0.0005 0.003 0.0011 (2.52) pass",
    "units": "All values in g.",
    # n: deviations.
    "deviations": "Deviations None from the procedure.",
    # o: who authorised it, with meaning and time.
    "performer": "Anna Maier (amaier): I performed this calibration",
    "approver": "Jonas Koch (jkoch): I reviewed this calibration and authorise the issue",
    "signed at": "2026-11-25 08:15 UTC",
    "content hash": "content SHA-256:",
    # 7.8.4.1 a: uncertainty, with k and coverage.
    "uncertainty": "coverage factor k = t95.45(\u03bdeff), the Student quantile at the effective "
    "degrees of freedom from the Welch\u2013Satterthwaite formula (given per point), for a "
    "coverage probability of approximately 95 %",
    "gum": "JCGM 100:2008 (GUM)",
    "budget": "Combined uc 0.000444 6.3 Expanded U = k · uc, k = 2.52 0.0011",
    # b: environmental conditions.
    "temperature": "air temperature 21.2 to 21.9 °C, recorded live",
    "humidity": "relative humidity 44 to 47 %rh",
    # c: traceability.
    "standard": "W-F1-SET-07",
    "standard certificate": "DAkkS D-K-15071-01-00 2026-0412",
    "standard U": "0.0001 g (k = 2)",
    "traceability": "PTB national mass standard via DAkkS-accredited laboratory",
    "SI": "metrologically traceable to the International System of Units (SI)",
    # d, f: before and after adjustment; the adjustment.
    "as found table": "Results before adjustment (as found)",
    "as found row": "200 0.01085 0.003 0.00059 FAIL",
    "adjustment": "Span adjusted with the balance's internal calibration weight",
    # 7.8.6: conformity with its decision rule.
    "decision rule": "Binary statement with guard band w = U (ILAC-G8:09/2019, 4.2.2)",
    "specification": "Specification ± 0.002 g (± 0.003 g at 200 g)",
    "conformity": "The instrument, as left, CONFORMS to the tolerance",
    "as found conformity": "As found, before adjustment, it did not conform at 40, 60",
    # The plot and the fit.
    "plot": "error of indication / mg",
    "fit": "C(I) = a0 + a1·(I \u2212 x0)",
    "coefficients": "Coefficient Value Standard uncertainty Unit",
    "a0": "a0 5.48829·10⁻⁵ 0.00018 g",
    "linearity": "linearity error (largest residual) 0.000424 g",
    "correlation": "r(a0, a1) = -0.8291",
}


@pytest.mark.parametrize("field", sorted(REQUIRED))
def test_the_pdf_text_has_every_required_field(text: str, field: str) -> None:
    assert REQUIRED[field] in text


def test_every_page_names_the_certificate_and_says_page_x_of_y(pdf: bytes) -> None:
    pages = pages_text(pdf)
    assert len(pages) >= 2
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in text
        assert "Certificate KMZ-2026-0042, revision 1" in text


def test_no_recalibration_interval_on_the_certificate(pdf: bytes) -> None:
    """ISO/IEC 17025 7.8.4.3: the due date lives in the instrument's record, not here."""
    record = approved_balance_record()
    assert record.instrument.next_due is not None
    text = flat(pdf).lower()
    assert record.instrument.next_due.isoformat() not in text
    for phrase in ("recalibration", "calibration interval", "next calibration", "due date"):
        assert phrase not in text


def test_two_renders_are_byte_identical(renderer: CertificateRenderer, pdf: bytes) -> None:
    assert renderer.render(approved_balance_record()) == pdf
    assert render_certificate(approved_balance_record()) == pdf  # a fresh Typst too
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert reader.metadata is not None
    assert reader.metadata["/CreationDate"] == "D:20261125081500Z"  # the approval time


def test_a_different_record_gives_a_different_pdf(
    renderer: CertificateRenderer, pdf: bytes
) -> None:
    other = renderer.render(approved_balance_record("KMZ-2026-0043"))
    assert other != pdf
    assert "Certificate number KMZ-2026-0043" in flat(other)


def test_a_draft_is_marked_and_has_no_issue_date(renderer: CertificateRenderer) -> None:
    text = flat(renderer.render(balance_record()))
    assert "DRAFT" in text
    assert "Date of issue not issued (draft)" in text


def test_a_record_changed_behind_the_api_is_not_rendered(renderer: CertificateRenderer) -> None:
    tampered = msgspec.structs.replace(approved_balance_record(), remarks="quietly edited")
    with pytest.raises(SignatureError):
        renderer.render(tampered)


def test_manual_readings_are_marked(renderer: CertificateRenderer) -> None:
    record = balance_record()
    point = record.as_left[2]
    manual = msgspec.structs.replace(
        point,
        readings=(*point.readings[:2], Reading(value=40.0, ts=0.0, manual=True, note="by eye")),
    )
    text = flat(renderer.render(add_point(record, "as_left", manual)))
    assert "† includes readings entered by hand" in text


def test_a_correction_names_the_revision_it_replaces(renderer: CertificateRenderer) -> None:
    old = approved_balance_record()
    fixed = set_environment(
        correct(old, reason="humidity transcribed wrongly"),
        EnvironmentRecord(name="relative humidity", unit="%rh", minimum=45, maximum=47),
    )
    fixed = sign_performed(fixed, user="amaier", full_name="Anna Maier", at=AT)
    fixed = approve(fixed, user="jkoch", full_name="Jonas Koch", at=AT)
    text = flat(renderer.render(fixed))
    assert "This revision 2 replaces certificate KMZ-2026-0042 revision 1" in text
    assert "Reason: humidity transcribed wrongly" in text
    assert "Certificate KMZ-2026-0042, revision 2" in text


def test_one_point_no_fit_simple_rule_welch_satterthwaite(renderer: CertificateRenderer) -> None:
    """A thermometer at one point: no curve, simple acceptance, k from nu_eff."""
    record = balance_record(points=1)
    procedure = msgspec.structs.replace(
        record.procedure,
        fit=msgspec.structs.replace(record.procedure.fit, kind="none"),
        decision_rule=msgspec.structs.replace(record.procedure.decision_rule, kind="simple"),
        coverage=msgspec.structs.replace(record.procedure.coverage, method="welch_satterthwaite"),
    )
    record = msgspec.structs.replace(record, procedure=procedure, as_found=())
    record = add_point(
        record,
        "as_left",
        PointResult(
            index=0,
            nominal=0.0,
            reference_value=0.0,
            standards=(),
            readings=(Reading(value=0.0, ts=0.0), Reading(value=0.001, ts=1.0)),
        ),
    )
    text = flat(renderer.render(record))
    assert "Simple acceptance (ILAC-G8:09/2019, 4.2.1" in text
    assert "k = t95.45(\u03bdeff)" in text
    assert "Correction curve" not in text
    assert "Results before adjustment" not in text


def test_the_first_page_renders_to_png_for_a_look(pdf: bytes, tmp_path: Path) -> None:
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (Debian's poppler-utils) is not installed; the text checks ran")
    (tmp_path / "c.pdf").write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", "c.pdf", "page"],
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    png = next(tmp_path.glob("page*.png")).read_bytes()
    assert png.startswith(b"\x89PNG")


def test_the_sample_in_docs_is_this_example(pdf: bytes) -> None:
    """docs/calibration/ holds this module's output (text compared: Typst versions differ)."""
    if os.environ.get("KMZ_WRITE_SAMPLE"):
        DOCS.mkdir(parents=True, exist_ok=True)
        SAMPLE_PDF.write_bytes(pdf)
        if shutil.which("pdftoppm"):
            subprocess.run(
                [
                    *("pdftoppm", "-png", "-r", "110", "-f", "1", "-l", "1", "-singlefile"),
                    *("-", str(SAMPLE_PNG.with_suffix(""))),
                ],
                input=pdf,
                check=True,
                timeout=60,
            )
    assert SAMPLE_PDF.exists(), "run with KMZ_WRITE_SAMPLE=1 to write the sample"
    assert pages_text(SAMPLE_PDF.read_bytes()) == pages_text(pdf)


def test_a_quadratic_fit_prints_three_coefficients_with_units(
    renderer: CertificateRenderer,
) -> None:
    record = balance_record()
    procedure = msgspec.structs.replace(
        record.procedure,
        fit=msgspec.structs.replace(record.procedure.fit, kind="polynomial", degree=2),
    )
    text = flat(renderer.render(msgspec.structs.replace(record, procedure=procedure)))
    assert "polynomial of degree 2" in text
    assert "a2·(I \u2212 x0)²" in text
    assert "r(a0, a1) =" in text
    assert "r(a1, a2) =" in text
    assert re.search(r"a2 \S+ \S+ g⁻¹", text)


def test_conditions_outside_the_procedures_range_or_missing_are_flagged(
    renderer: CertificateRenderer,
) -> None:
    record = balance_record()
    hot = EnvironmentRecord(
        name="air temperature", unit="°C", minimum=25.0, maximum=27.5, manual=True
    )
    record = msgspec.structs.replace(record, environment=(hot,))
    text = flat(renderer.render(record))
    assert "25 to 27.5 °C, entered by hand; OUTSIDE the procedure's range 18 to 26 °C" in text
    assert "relative humidity not recorded, asked for by the procedure" in text
