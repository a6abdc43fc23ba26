"""GUM arithmetic: Type A repeatability, uncertainty budgets, coverage factors, rounding.

Plain Python (`math`, `fractions`-free float64): numpy is not a dependency of
the project, and these sums are small. Every formula names its GUM clause
(JCGM 100:2008); `tests/calibration` checks them against the reference cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

import msgspec

from .errors import InsufficientData

#: Coverage probability the GUM's k = 2 stands for (GUM 6.3.3, Table G.1: 95.45 %).
COVERAGE_PROBABILITY = 0.9545
#: Above this many degrees of freedom the Student quantile comes from its
#: Cornish-Fisher series (error below 1e-15), not the exact finite sum.
_SERIES_DOF = 100_000


class Repeatability(msgspec.Struct, frozen=True):
    """Type A evaluation of repeated readings (GUM 4.2)."""

    n: int
    mean: float
    #: Experimental standard deviation s, with n - 1 (GUM 4.2.2).
    s: float
    #: Experimental standard deviation of the mean s/sqrt(n) (GUM 4.2.3).
    s_mean: float
    #: Degrees of freedom n - 1.
    dof: int


def repeatability(values: Sequence[float]) -> Repeatability:
    """Mean, s (n - 1), s/sqrt(n) and degrees of freedom of repeated readings."""
    n = len(values)
    if n == 0:
        raise InsufficientData("repeatability needs at least one reading")
    mean = math.fsum(values) / n
    if n == 1:
        # One reading says nothing about scatter: s is unknown, not zero; the
        # budget then has no repeatability term and says so (dof 0).
        return Repeatability(n=1, mean=mean, s=0.0, s_mean=0.0, dof=0)
    # Centred sum of squares: the uncentred form loses digits on readings
    # such as 50.05 ... 50.08 that differ only in the last places.
    ss = math.fsum((v - mean) ** 2 for v in values)
    s = math.sqrt(ss / (n - 1))
    return Repeatability(n=n, mean=mean, s=s, s_mean=s / math.sqrt(n), dof=n - 1)


class Component(msgspec.Struct, frozen=True):
    """One line of an uncertainty budget: a standard uncertainty in the measurand's unit."""

    name: str
    #: Standard uncertainty u(x_i) times its sensitivity coefficient (all 1 here).
    u: float
    #: Degrees of freedom; None for a Type B estimate taken as exactly known (infinite).
    dof: int | None = None
    #: "A" (statistics of readings) or "B" (certificate, resolution, ...).
    kind: str = "B"


class Budget(msgspec.Struct, frozen=True):
    """The combined and expanded uncertainty of one result."""

    components: tuple[Component, ...]
    #: Combined standard uncertainty u_c (GUM 5.1.2).
    u_c: float
    #: Welch-Satterthwaite effective degrees of freedom (GUM G.4.1); None = infinite.
    dof_eff: float | None
    #: Coverage factor used.
    k: float
    #: Expanded uncertainty U = k * u_c (GUM 6.2.1).
    expanded: float
    #: "fixed" (k given, normally 2) or "welch_satterthwaite" (k = t_95.45(dof_eff)).
    coverage_method: str

    def share(self, name: str) -> float:
        """Fraction of u_c^2 that the component called ``name`` contributes."""
        if self.u_c == 0:
            return 0.0
        return sum(c.u**2 for c in self.components if c.name == name) / self.u_c**2


def reference_component(expanded: float, k: float, name: str = "reference") -> Component:
    """A certificate's U at coverage factor k as a standard uncertainty U/k (GUM 4.3.1)."""
    if k <= 0:
        raise ValueError(f"coverage factor must be positive, got {k}")
    return Component(name=name, u=expanded / k, kind="B")


def resolution_component(
    step: float, *, full_step: bool = False, name: str = "resolution"
) -> Component:
    """A display of step d as a rectangular distribution: d/sqrt(12) (GUM F.2.2.1).

    ``full_step`` takes the half-width as d instead of d/2, giving d/sqrt(3): a
    more cautious convention some laboratories choose; never the default.
    """
    half_width = step if full_step else step / 2
    return Component(name=name, u=half_width / math.sqrt(3), kind="B")


def repeatability_component(result: Repeatability, name: str = "repeatability") -> Component:
    """Type A term s/sqrt(n) with n - 1 degrees of freedom (GUM 4.2.3)."""
    return Component(name=name, u=result.s_mean, dof=result.dof if result.dof else None, kind="A")


def combine(
    components: Sequence[Component], *, k: float = 2.0, welch_satterthwaite: bool = False
) -> Budget:
    """Combine uncorrelated components with unit sensitivity (GUM 5.1.2), then expand.

    With ``welch_satterthwaite`` the coverage factor is the Student quantile
    t_95.45 at the effective degrees of freedom, truncated to an integer (GUM G.4.1).
    """
    u_c = math.sqrt(math.fsum(c.u**2 for c in components))
    dof_eff = effective_dof(components, u_c)
    if welch_satterthwaite:
        k = coverage_factor(dof_eff)
        method = "welch_satterthwaite"
    else:
        method = "fixed"
    return Budget(
        components=tuple(components),
        u_c=u_c,
        dof_eff=dof_eff,
        k=k,
        expanded=k * u_c,
        coverage_method=method,
    )


def effective_dof(components: Sequence[Component], u_c: float | None = None) -> float | None:
    """Welch-Satterthwaite: u_c^4 / sum(u_i^4 / nu_i); Type B terms count as infinite."""
    if u_c is None:
        u_c = math.sqrt(math.fsum(c.u**2 for c in components))
    denominator = math.fsum(c.u**4 / c.dof for c in components if c.dof and c.u > 0)
    if denominator == 0:
        return None
    return u_c**4 / denominator


def coverage_factor(dof: float | None, probability: float = COVERAGE_PROBABILITY) -> float:
    """k for ``probability`` at ``dof`` degrees of freedom (truncated, GUM G.4.1); None = normal."""
    if dof is None or math.isinf(dof):
        return normal_quantile(probability)
    return student_t_quantile(probability, max(1, math.floor(dof)))


def normal_quantile(probability: float) -> float:
    """z with P(|Z| <= z) = probability for a standard normal Z."""
    _check_probability(probability)
    z = 2.0
    for _ in range(100):
        density = math.sqrt(2 / math.pi) * math.exp(-z * z / 2)
        step = (math.erf(z / math.sqrt(2)) - probability) / density
        z -= step
        if abs(step) < 1e-16 * z:
            break
    return z


def student_t_quantile(probability: float, dof: int) -> float:
    """t with P(|T| <= t) = probability for Student's T with integer ``dof`` (GUM G.3)."""
    _check_probability(probability)
    if dof < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {dof}")
    z = normal_quantile(probability)
    if dof >= _SERIES_DOF:
        return _cornish_fisher(z, dof)
    # Safeguarded Newton on the exact two-sided distribution: the root lies
    # above z (Student tails are heavier); bisection whenever a step leaves
    # the bracket, so a poor start cannot diverge.
    low, high = z, max(2 * z, 1.0)
    while _two_sided_t(high, dof) < probability:
        low, high = high, 2 * high
    t = min(max(_cornish_fisher(z, dof), low), high)
    log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)
    for _ in range(200):
        excess = _two_sided_t(t, dof) - probability
        if excess > 0:
            high = t
        else:
            low = t
        density = math.exp(log_norm - (dof + 1) / 2 * math.log1p(t * t / dof))
        candidate = t - excess / (2 * density) if density > 0 else (low + high) / 2
        if not low < candidate < high:
            candidate = (low + high) / 2
        if abs(candidate - t) <= 4e-16 * t:
            return candidate
        t = candidate
    return t


def _two_sided_t(t: float, dof: int) -> float:
    """P(|T| <= t), exact finite sums (Abramowitz & Stegun 26.7.3, 26.7.4)."""
    theta = math.atan(t / math.sqrt(dof))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if dof % 2 == 0:
        term = total = 1.0
        for j in range(1, dof // 2):
            term *= (2 * j - 1) / (2 * j) * cos2
            total += term
        return sin * total
    if dof == 1:
        return 2 / math.pi * theta
    term = total = math.cos(theta)
    for j in range(1, (dof - 1) // 2):
        term *= (2 * j) / (2 * j + 1) * cos2
        total += term
    return 2 / math.pi * (theta + sin * total)


def _cornish_fisher(z: float, dof: int) -> float:
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3


def _check_probability(probability: float) -> None:
    if not 0 < probability < 1:
        raise ValueError(f"probability must lie strictly between 0 and 1, got {probability}")


def round_uncertainty(expanded: float, digits: int = 2) -> Decimal:
    """U to ``digits`` significant digits, half up (GUM 7.2.6)."""
    if expanded <= 0 or not math.isfinite(expanded):
        return Decimal(0)
    exponent = math.floor(math.log10(expanded)) - digits + 1
    quantum = Decimal(1).scaleb(exponent)
    rounded = Decimal(repr(expanded)).quantize(quantum, rounding=ROUND_HALF_UP)
    if rounded.adjusted() - digits + 1 != exponent:  # 0.0995 -> 0.10: one digit fewer
        rounded = rounded.quantize(quantum.scaleb(1), rounding=ROUND_HALF_UP)
    return rounded


def report(value: float, expanded: float, digits: int = 2) -> tuple[str, str]:
    """(value, U) as strings: U to ``digits`` significant digits, the value to U's last place."""
    u_text = round_uncertainty(expanded, digits)
    if u_text == 0:
        return repr(value), "0"
    value_text = Decimal(repr(value)).quantize(u_text, rounding=ROUND_HALF_UP)
    if value_text == 0:
        value_text = abs(value_text)  # no "-0.000"
    return f"{value_text:f}", f"{u_text:f}"
