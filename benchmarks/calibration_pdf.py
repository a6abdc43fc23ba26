"""How long a 10-point calibration certificate with its plot takes as PDF (target: < 100 ms).

    python benchmarks/calibration_pdf.py [--renders 30] [--json FILE]

Renders the example balance record (`kleinmaelzung.calibration.examples`: ten
points as found and as left, a straight-line fit, the SVG plot, three pages)
with one `CertificateRenderer`:

- first: the first render of a fresh renderer (Typst loads fonts, parses the
  template);
- later: each further render of a *different* record (its own certificate
  number), so Typst cannot hand back a memoised result: the figure the
  target is about;
- same record again: what a repeated download of one certificate costs
  (Typst's memoisation at work);
- Python alone: evaluating the record, building the template's data and
  the SVG, without Typst: the peer that says how much of the time is ours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from kleinmaelzung.calibration import evaluate
from kleinmaelzung.calibration.certificate import CertificateRenderer
from kleinmaelzung.calibration.certificate_content import certificate_data
from kleinmaelzung.calibration.examples import approved_balance_record
from kleinmaelzung.calibration.plot import error_plot_svg

TARGET_MS = 100.0


def _ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": round(1000 * statistics.median(ordered), 2),
        "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max_ms": round(1000 * ordered[-1], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=30, help="renders after the first")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    records = [approved_balance_record(f"KMZ-BENCH-{i:04d}") for i in range(args.renders + 1)]
    assert len(records[0].as_left) == 10

    started = time.perf_counter()
    renderer = CertificateRenderer()
    first_pdf = renderer.render(records[0])
    first = time.perf_counter() - started

    later = []
    for record in records[1:]:
        started = time.perf_counter()
        renderer.render(record)
        later.append(time.perf_counter() - started)

    again = []
    for _ in range(args.renders):
        started = time.perf_counter()
        renderer.render(records[0])
        again.append(time.perf_counter() - started)

    python_only = []
    for record in records[1:]:
        started = time.perf_counter()
        evaluation = evaluate(record)
        certificate_data(record, evaluation)
        error_plot_svg(evaluation, unit="g", scale=1000.0, scale_unit="mg")
        python_only.append(time.perf_counter() - started)

    figures = {
        "points": 10,
        "pdf_bytes": len(first_pdf),
        "first_render_ms": round(1000 * first, 2),
        "later_renders": _ms(later),
        "same_record_again": _ms(again),
        "python_without_typst": _ms(python_only),
        "target_ms": TARGET_MS,
    }
    figures["meets_target"] = figures["later_renders"]["p95_ms"] < TARGET_MS  # type: ignore[index]
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if figures["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
