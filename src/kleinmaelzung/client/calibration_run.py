"""A guided calibration run: the operator is told what to apply, sees the live value and
whether it is stable, and each reading is captured by the hub when it is.

`guided_run` does the walking; an `Operator` does the talking (the terminal
in `kmz calibration run`, a script in a test). The client watches the
instrument's live samples and applies the procedure's stability criterion
(the same pure `is_stable` the hub uses) to show the indicator and to know
when to ask; the hub then checks the criterion again on its own log and
keeps the raw samples with the reading, so what is recorded never depends
on what a client says it saw.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from ..calibration import RawSample, is_stable
from ..calibration.api import RecordView
from ..calibration.model import Phase
from ..calibration.stability import spread
from ..protocol import KmzError, Sample
from .aio import Client
from .calibrations import Calibrations
from .errors import RequestError
from .subscription import Subscription

#: Samples the client keeps for its stability indicator.
_KEPT = 64


class RunAborted(KmzError):
    """The operator stopped the run, or the instrument did not settle in time."""

    code = "run_aborted"


class Operator(Protocol):
    """Who stands at the bench: told what to do, answers, watches the live value."""

    async def ask(self, question: str) -> str:
        """Ask; the answer ("" to go on). Raise `RunAborted` to stop."""

    def live(self, value: float, unit: str, stable: bool, detail: str) -> None:
        """The newest live reading and whether it is stable."""

    def say(self, text: str) -> None:
        """Tell the operator something."""


async def guided_run(
    client: Client,
    api: Calibrations,
    operator: Operator,
    *,
    instrument: str,
    procedure: str,
    standards: Sequence[str] = (),
    version: int | None = None,
    phases: Sequence[Phase] = ("as_found",),
    sign_as: str | None = None,
    settle_timeout_s: float = 60.0,
) -> RecordView:
    """Start a calibration, walk the operator through every point, return the record.

    With `sign_as` (a full name, possibly ""), the performer signs at the end.
    """
    view = await api.start(instrument, procedure, standards=tuple(standards), version=version)
    record = view.record
    number = record.certificate_number
    steps = record.procedure
    unit = steps.unit
    operator.say(
        f"Calibration {number} of {instrument} under {steps.name} version {steps.version}: "
        f"{len(steps.points)} points, {steps.title}"
    )
    subscription = await client.subscribe(instrument).start()
    try:
        for phase in phases:
            if phase == "as_left" and "as_found" in phases:
                text = await operator.ask(
                    "Adjust the instrument now; describe the adjustment (Enter: none): "
                )
                if text.strip():
                    await api.adjust(number, text.strip())
            for index, point in enumerate(steps.points):
                what = f" ({point.apply})" if point.apply else ""
                answer = await operator.ask(
                    f"[{phase.replace('_', '-')}] point {index + 1}/{len(steps.points)}: "
                    f"{point.nominal:g} {unit}{what}. Apply it, then Enter "
                    "(or type the reference value): "
                )
                # Samples before this show the previous load (agent clocks are
                # kept within the hub's bound, 1 s by default, by NTP).
                applied_at = time.time()
                reference = _number(answer)
                if answer.strip() and reference is None:
                    raise RunAborted(f"not a number: {answer.strip()!r}")
                for repetition in range(steps.repetitions_at(index)):
                    view = await _capture_when_stable(
                        subscription,
                        api,
                        operator,
                        number=number,
                        phase=phase,
                        index=index,
                        reference=reference,
                        applied_at=applied_at,
                        unit=unit,
                        channel=record.instrument.channel,
                        timeout_s=settle_timeout_s,
                        view=view,
                    )
                    captured = view.captured
                    assert captured is not None  # a capture answers with its reading
                    operator.say(
                        f"  reading {repetition + 1}/{steps.repetitions_at(index)}: "
                        f"{captured.value:g} {unit} (from {len(captured.raw)} samples)"
                    )
    finally:
        await subscription.close()
    view = await api.get(number)
    recorded = {e.name for e in view.record.environment}
    for condition in steps.environment:
        if condition.name in recorded:
            continue
        answer = await operator.ask(
            f"{condition.name} [{condition.unit}] during the calibration (min max): "
        )
        values = [_number(part) for part in answer.split()]
        if not values or any(v is None for v in values):
            raise RunAborted(f"{condition.name}: expected one or two numbers, got {answer!r}")
        low, high = min(values), max(values)  # type: ignore[type-var]
        assert low is not None and high is not None
        view = await api.enter_environment(number, condition.name, low, high)
    if sign_as is not None:
        view = await api.sign(number, sign_as)
        operator.say(f"Signed as performed; {number} awaits approval by a second person.")
    return view


async def _capture_when_stable(
    subscription: Subscription,
    api: Calibrations,
    operator: Operator,
    *,
    number: str,
    phase: Phase,
    index: int,
    reference: float | None,
    applied_at: float,
    unit: str,
    channel: str,
    timeout_s: float,
    view: RecordView,
) -> RecordView:
    """Watch live samples until the criterion holds, then have the hub capture a reading."""
    criterion = view.record.procedure.stability
    flag = criterion.flag
    recent: deque[RawSample] = deque(maxlen=_KEPT)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    events = subscription.__aiter__()
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise RunAborted(
                f"{view.record.instrument.id} did not become stable within {timeout_s:g} s"
            )
        try:
            event = await asyncio.wait_for(anext(events), left)
        except TimeoutError:
            continue
        if not isinstance(event, Sample) or event.ts < applied_at:
            continue
        value = event.values.get(channel)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        stable_flag = event.values.get(flag) if flag else None
        recent.append(
            RawSample(
                ts=event.ts,
                value=float(value),
                stable=stable_flag if isinstance(stable_flag, bool) else None,
            )
        )
        samples = list(recent)
        stable = is_stable(samples, criterion)
        width = spread(samples, criterion.window) if criterion.window else None
        detail = f"spread {width:g} {unit}" if width is not None else ""
        operator.live(float(value), unit, stable, detail)
        if not stable:
            continue
        try:
            return await api.capture(
                number, phase, index, reference_value=reference, not_before=applied_at
            )
        except RequestError as exc:
            if exc.code != "not_stable":
                raise
            # The hub's log disagreed (a sample newer than ours): keep watching.


def _number(text: str) -> float | None:
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        return None
    return value if math.isfinite(value) else None
