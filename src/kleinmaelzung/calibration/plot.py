"""The certificate's plot as SVG, written by hand: error against nominal, tolerance band, fit.

No plotting library: the figure is small, and writing it ourselves keeps the
extra light and the output byte-stable (every number is formatted with a
fixed number of decimals, so the same record gives the same SVG).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from xml.sax.saxutils import escape

from .evaluation import Evaluation, PhaseEvaluation

WIDTH, HEIGHT = 480.0, 250.0
_LEFT, _RIGHT, _TOP, _BOTTOM = 62.0, 12.0, 14.0, 40.0
_FONT = "Libertinus Serif"
_AS_FOUND = "#b8860b"
_AS_LEFT = "#1f4e9a"
_BAND = "#dfeedd"


def error_plot_svg(
    evaluation: Evaluation, *, unit: str, scale: float = 1.0, scale_unit: str = ""
) -> str:
    """SVG of each point's error with its U as a bar, the tolerance band and the fit.

    ``scale`` multiplies errors for display (1000 to show g as mg), labelled ``scale_unit``.
    """
    phases = [p for p in (evaluation.as_found, evaluation.as_left) if p is not None]
    final = evaluation.final
    nominals = [p.nominal for p in final.points]
    x_low, x_high = min(nominals), max(nominals)
    if x_low == x_high:
        x_low, x_high = x_low - 1, x_high + 1
    pad = 0.04 * (x_high - x_low)
    x_low, x_high = x_low - pad, x_high + pad
    y_values = [0.0]
    for phase in phases:
        for p in phase.points:
            y_values += [(p.error - p.expanded) * scale, (p.error + p.expanded) * scale]
    for p in final.points:
        y_values += [p.tolerance * scale * 1.15, -p.tolerance * scale * 1.15]
    y_low, y_high, y_ticks = _nice_range(min(y_values), max(y_values))
    x_ticks = _nice_range(x_low, x_high)[2]

    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def sy(y: float) -> float:
        return _TOP + (y_high - y) / (y_high - y_low) * plot_h

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0f}" height="{HEIGHT:.0f}" '
        f'viewBox="0 0 {WIDTH:.0f} {HEIGHT:.0f}" font-family="{_FONT}" font-size="10">',
        f'<rect x="{_LEFT:.2f}" y="{_TOP:.2f}" width="{plot_w:.2f}" height="{plot_h:.2f}" '
        'fill="white" stroke="#444" stroke-width="0.8"/>',
    ]
    # Tolerance band: +-T at each point, joined; the acceptance limit inside
    # it when a guard band applies.
    upper = [(sx(p.nominal), sy(p.tolerance * scale)) for p in final.points]
    lower = [(sx(p.nominal), sy(-p.tolerance * scale)) for p in reversed(final.points)]
    band = " ".join(f"{x:.2f},{y:.2f}" for x, y in _extend(upper, sx(x_low), sx(x_high)))
    band += " " + " ".join(f"{x:.2f},{y:.2f}" for x, y in _extend(lower, sx(x_high), sx(x_low)))
    out.append(f'<polygon points="{band}" fill="{_BAND}" stroke="#6a9f62" stroke-width="0.8"/>')
    if evaluation.decision_rule.kind == "guard_banded":
        for sign in (1, -1):
            limit = [
                (sx(p.nominal), sy(sign * max(p.acceptance_limit, 0) * scale)) for p in final.points
            ]
            path = " ".join(f"{x:.2f},{y:.2f}" for x, y in _extend(limit, sx(x_low), sx(x_high)))
            out.append(
                f'<polyline points="{path}" fill="none" stroke="#6a9f62" '
                'stroke-width="0.8" stroke-dasharray="3 2"/>'
            )
    # Grid and ticks.
    for y in y_ticks:
        out.append(
            f'<line x1="{_LEFT:.2f}" y1="{sy(y):.2f}" x2="{WIDTH - _RIGHT:.2f}" y2="{sy(y):.2f}" '
            f'stroke="{"#888" if y == 0 else "#ddd"}" stroke-width="0.5"/>'
        )
        out.append(
            f'<text x="{_LEFT - 4:.2f}" y="{sy(y) + 3:.2f}" text-anchor="end">'
            f"{_tick(y, y_ticks)}</text>"
        )
    for x in x_ticks:
        if not x_low <= x <= x_high:
            continue
        out.append(
            f'<line x1="{sx(x):.2f}" y1="{HEIGHT - _BOTTOM:.2f}" x2="{sx(x):.2f}" '
            f'y2="{HEIGHT - _BOTTOM + 3:.2f}" stroke="#444" stroke-width="0.6"/>'
        )
        out.append(
            f'<text x="{sx(x):.2f}" y="{HEIGHT - _BOTTOM + 13:.2f}" text-anchor="middle">'
            f"{_tick(x, x_ticks)}</text>"
        )
    # The fit, drawn as the error it implies: E(x) = -C(x).
    fit = evaluation.fit
    if fit is not None:
        steps = 60
        curve = []
        for i in range(steps + 1):
            x = x_low + pad + (x_high - x_low - 2 * pad) * i / steps
            curve.append(f"{sx(x):.2f},{sy(-fit.predict(x) * scale):.2f}")
        out.append(
            f'<polyline points="{" ".join(curve)}" fill="none" stroke="{_AS_LEFT}" '
            'stroke-width="0.9" stroke-dasharray="5 2" opacity="0.8"/>'
        )
    for phase in phases:
        out.extend(_points(phase, sx, sy, scale))
    # Axis labels and legend.
    axis_unit = scale_unit or unit
    out.append(
        f'<text x="{_LEFT + plot_w / 2:.2f}" y="{HEIGHT - 6:.2f}" text-anchor="middle">'
        f"nominal value / {escape(unit)}</text>"
    )
    out.append(
        f'<text transform="translate(13 {_TOP + plot_h / 2:.2f}) rotate(-90)" '
        f'text-anchor="middle">error of indication / {escape(axis_unit)}</text>'
    )
    legend = [("as found", _AS_FOUND, False), ("as left", _AS_LEFT, True)]
    lx = _LEFT + 8
    for label, colour, filled in legend:
        if label == "as found" and evaluation.as_found is None:
            continue
        if label == "as left" and evaluation.as_left is None:
            continue
        out.append(_marker(lx, _TOP + 10, colour, filled))
        out.append(f'<text x="{lx + 6:.2f}" y="{_TOP + 13:.2f}">{label}</text>')
        lx += 58
    out.append(
        f'<rect x="{lx - 4:.2f}" y="{_TOP + 6:.2f}" width="8" height="8" fill="{_BAND}" '
        'stroke="#6a9f62" stroke-width="0.8"/>'
    )
    out.append(f'<text x="{lx + 6:.2f}" y="{_TOP + 13:.2f}">tolerance</text>')
    if fit is not None:
        lx += 58
        out.append(
            f'<line x1="{lx - 6:.2f}" y1="{_TOP + 10:.2f}" x2="{lx + 4:.2f}" y2="{_TOP + 10:.2f}" '
            f'stroke="{_AS_LEFT}" stroke-width="0.9" stroke-dasharray="5 2"/>'
        )
        out.append(f'<text x="{lx + 8:.2f}" y="{_TOP + 13:.2f}">fit</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _points(
    phase: PhaseEvaluation,
    sx: Callable[[float], float],
    sy: Callable[[float], float],
    scale: float,
) -> list[str]:
    colour, filled = (_AS_LEFT, True) if phase.phase == "as_left" else (_AS_FOUND, False)
    # As-found and as-left at the same nominal sit a little apart, so both show.
    shift = 3.0 if phase.phase == "as_left" else -3.0
    out = []
    for p in phase.points:
        x = sx(p.nominal) + shift
        top, bottom = sy((p.error + p.expanded) * scale), sy((p.error - p.expanded) * scale)
        out.append(
            f'<line x1="{x:.2f}" y1="{top:.2f}" x2="{x:.2f}" y2="{bottom:.2f}" '
            f'stroke="{colour}" stroke-width="0.9"/>'
        )
        for end in (top, bottom):
            out.append(
                f'<line x1="{x - 2.5:.2f}" y1="{end:.2f}" x2="{x + 2.5:.2f}" y2="{end:.2f}" '
                f'stroke="{colour}" stroke-width="0.9"/>'
            )
        out.append(_marker(x, sy(p.error * scale), colour, filled))
    return out


def _marker(x: float, y: float, colour: str, filled: bool) -> str:
    fill = colour if filled else "white"
    return (
        f'<circle cx="{x:.2f}" cy="{y:.2f}" r="2.6" fill="{fill}" stroke="{colour}" '
        'stroke-width="1"/>'
    )


def _extend(
    points: list[tuple[float, float]], start: float, end: float
) -> list[tuple[float, float]]:
    """Carry the band's first and last values out to the plot's edges."""
    return [(start, points[0][1]), *points, (end, points[-1][1])]


def _nice_range(low: float, high: float, count: int = 6) -> tuple[float, float, list[float]]:
    """Axis limits on round numbers and ticks between them."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    stop = math.ceil(high / step) * step
    ticks = [start + i * step for i in range(round((stop - start) / step) + 1)]
    return start, stop, [0.0 if abs(t) < step * 1e-9 else t for t in ticks]


def _tick(value: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    exponent = Decimal(repr(round(step, 12))).normalize().as_tuple().exponent
    decimals = max(0, -exponent) if isinstance(exponent, int) else 0
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text.replace("-", "\u2212")
