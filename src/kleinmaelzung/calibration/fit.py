"""Least-squares fits of a calibration curve: offset, straight line, polynomial of degree n.

The model is ``y = a0 + a1*(x - x0) + ... + an*(x - x0)^n`` with x0 a fixed
reference point (GUM H.3 uses t0 = 20 degC): moving x0 changes the
coefficients and their correlation, never a prediction or its uncertainty.

Solved by Householder QR in plain Python: backward stable like numpy's lstsq
(the reference cases' 1e-9 margin holds by some four orders of magnitude),
with no normal equations whose squared condition number loses digits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

from .errors import InsufficientData


class Fit(msgspec.Struct, frozen=True):
    """A fitted polynomial with the statistics a certificate and an auditor need."""

    degree: int
    #: The fixed point x0 the powers are taken about.
    x0: float
    coefficients: tuple[float, ...]
    #: Standard uncertainties of the coefficients, from the residual scatter.
    standard_uncertainties: tuple[float, ...]
    #: Covariance matrix of the coefficients, row by row.
    covariance: tuple[tuple[float, ...], ...]
    residuals: tuple[float, ...]
    #: Residual standard deviation s = sqrt(SS_res / dof).
    residual_sd: float
    #: Residual degrees of freedom n - (degree + 1).
    dof: int
    ss_residual: float
    #: Regression sum of squares Syy - SS_res (None for an offset: nothing to explain).
    ss_regression: float | None
    r_squared: float | None
    f_statistic: float | None
    x_min: float
    x_max: float

    def predict(self, x: float) -> float:
        """The curve at x."""
        dx = x - self.x0
        return math.fsum(a * dx**j for j, a in enumerate(self.coefficients))

    def standard_uncertainty_at(self, x: float) -> float:
        """u of the curve at x from the coefficients' covariance: sqrt(g' C g), g_j = (x - x0)^j."""
        dx = x - self.x0
        g = [dx**j for j in range(self.degree + 1)]
        variance = math.fsum(
            g[i] * self.covariance[i][j] * g[j]
            for i in range(self.degree + 1)
            for j in range(self.degree + 1)
        )
        return math.sqrt(max(variance, 0.0))

    def correlation(self, i: int, j: int) -> float:
        """Correlation coefficient r(a_i, a_j)."""
        denominator = self.standard_uncertainties[i] * self.standard_uncertainties[j]
        return self.covariance[i][j] / denominator if denominator else 0.0

    def extrapolated(self, x: float) -> bool:
        """True when x lies outside the range the curve was fitted on."""
        return not self.x_min <= x <= self.x_max

    @property
    def max_abs_residual(self) -> float:
        """Best-fit linearity error: the largest |residual|."""
        return max(abs(e) for e in self.residuals)


def fit_polynomial(x: Sequence[float], y: Sequence[float], degree: int, *, x0: float = 0.0) -> Fit:
    """Ordinary least squares of y on powers of (x - x0) up to ``degree``."""
    n, p = len(x), degree + 1
    if len(y) != n:
        raise ValueError(f"x has {n} values, y has {len(y)}")
    if degree < 0:
        raise ValueError(f"degree must be 0 or more, got {degree}")
    if n < p:
        raise InsufficientData(f"a degree-{degree} fit needs at least {p} points, got {n}")
    if len({float(v) for v in x}) < p:
        raise InsufficientData(f"a degree-{degree} fit needs {p} distinct x values")
    # Columns scaled by their norm before QR: a cubic over 0..1000 g has
    # columns eight orders of magnitude apart otherwise.
    columns = [[(xi - x0) ** j for xi in x] for j in range(p)]
    scales = [math.sqrt(math.fsum(v * v for v in column)) or 1.0 for column in columns]
    a = [[columns[j][i] / scales[j] for j in range(p)] for i in range(n)]
    r, qty = _householder(a, list(y))
    scaled = _back_substitute(r, qty[:p])
    coefficients = [scaled[j] / scales[j] for j in range(p)]
    residuals = [
        yi - math.fsum(c * (xi - x0) ** j for j, c in enumerate(coefficients))
        for xi, yi in zip(x, y, strict=True)
    ]
    ss_res = math.fsum(e * e for e in residuals)
    dof = n - p
    variance = ss_res / dof if dof else 0.0
    r_inverse = _upper_inverse(r)
    # C = s^2 (R'R)^-1 = s^2 R^-1 R^-T, then undo the column scaling.
    covariance = tuple(
        tuple(
            variance
            * math.fsum(r_inverse[i][m] * r_inverse[j][m] for m in range(p))
            / (scales[i] * scales[j])
            for j in range(p)
        )
        for i in range(p)
    )
    y_mean = math.fsum(y) / n
    ss_total = math.fsum((yi - y_mean) ** 2 for yi in y)
    ss_reg: float | None = None
    r_squared: float | None = None
    f_statistic: float | None = None
    if degree >= 1:
        ss_reg = ss_total - ss_res
        r_squared = ss_reg / ss_total if ss_total else None
        f_statistic = (ss_reg / degree) / variance if variance else None
    return Fit(
        degree=degree,
        x0=x0,
        coefficients=tuple(coefficients),
        standard_uncertainties=tuple(math.sqrt(max(covariance[j][j], 0.0)) for j in range(p)),
        covariance=covariance,
        residuals=tuple(residuals),
        residual_sd=math.sqrt(variance),
        dof=dof,
        ss_residual=ss_res,
        ss_regression=ss_reg,
        r_squared=r_squared,
        f_statistic=f_statistic,
        x_min=min(x),
        x_max=max(x),
    )


def _householder(a: list[list[float]], b: list[float]) -> tuple[list[list[float]], list[float]]:
    """Reduce a (n x p) to upper-triangular R in place, applying the same reflections to b."""
    n, p = len(a), len(a[0])
    for k in range(p):
        norm = math.sqrt(math.fsum(a[i][k] ** 2 for i in range(k, n)))
        if norm == 0:
            raise InsufficientData("the fit's design matrix is rank-deficient")
        alpha = -norm if a[k][k] >= 0 else norm
        v = [0.0] * n
        v[k] = a[k][k] - alpha
        for i in range(k + 1, n):
            v[i] = a[i][k]
        v_norm2 = math.fsum(vi * vi for vi in v[k:])
        if v_norm2 == 0:
            continue
        for j in range(k, p):
            dot = math.fsum(v[i] * a[i][j] for i in range(k, n))
            factor = 2 * dot / v_norm2
            for i in range(k, n):
                a[i][j] -= factor * v[i]
        dot = math.fsum(v[i] * b[i] for i in range(k, n))
        factor = 2 * dot / v_norm2
        for i in range(k, n):
            b[i] -= factor * v[i]
    r = [[a[i][j] if j >= i else 0.0 for j in range(p)] for i in range(p)]
    return r, b


def _back_substitute(r: list[list[float]], b: list[float]) -> list[float]:
    p = len(r)
    x = [0.0] * p
    for i in reversed(range(p)):
        x[i] = (b[i] - math.fsum(r[i][j] * x[j] for j in range(i + 1, p))) / r[i][i]
    return x


def _upper_inverse(r: list[list[float]]) -> list[list[float]]:
    p = len(r)
    inverse = [[0.0] * p for _ in range(p)]
    for column in range(p):
        unit = [1.0 if i == column else 0.0 for i in range(p)]
        solved = _back_substitute(r, unit)
        for i in range(p):
            inverse[i][column] = solved[i]
    return inverse
