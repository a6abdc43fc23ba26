"""When a live reading may be captured: the procedure's stability criterion, pure."""

from __future__ import annotations

from collections.abc import Sequence

from .model import RawSample, Stability


def is_stable(samples: Sequence[RawSample], criterion: Stability) -> bool:
    """True when the newest samples meet the criterion.

    By window: the last ``window`` samples lie within ``max_spread`` of one
    another. By flag: the newest sample carries the instrument's own stable
    flag. With neither, every reading is accepted as it comes.
    """
    if not samples:
        return False
    if criterion.flag is not None:
        return samples[-1].stable is True
    if criterion.window is None or criterion.max_spread is None:
        return True
    if len(samples) < criterion.window:
        return False
    window = [s.value for s in samples[-criterion.window :]]
    # Slack of a few ulps: 1.002 - 1.000 is 0.0020000000000000018 in binary,
    # and a spread of two display steps must count as two.
    slack = 1e-12 * max(abs(v) for v in window)
    return max(window) - min(window) <= criterion.max_spread + slack


def spread(samples: Sequence[RawSample], window: int) -> float | None:
    """Max - min of the last ``window`` samples, for a stability indicator; None if too few."""
    if len(samples) < window or window < 1:
        return None
    values = [s.value for s in samples[-window:]]
    return max(values) - min(values)
