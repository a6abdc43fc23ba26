"""Approved calibrations applied to the stream: the hub's versions of each instrument's correction.

The only writer of `active` (instrument id -> the `Correction` in force now)
and of `versions` (instrument id -> every version ever applied, oldest
first, each with the time it was applied and, once ended, withdrawn). The
calibration service persists what these methods return.

The data handler calls `apply` for each data message while some instrument
has a version, and `apply` returns the message and frame untouched unless
one of its samples belongs to such an instrument: instruments without a
calibration pay one dict lookup per sample, and nothing at all while no
calibration was ever applied anywhere.

A sample is corrected by the version in force at the sample's own time
(`at`): a sample taken before an approval is never corrected, and one taken
while a version was in force but arriving later (an agent's spool) gets
that version, as history and recovery (`corrected_sample`) give it too, so
what a subscriber saw live and what history says later agree.

A corrected sample carries ``corrected`` (the corrected value of the
calibrated channel) and ``calibration`` (certificate number and revision)
beside its raw ``values``; the message is encoded once, and that frame is
what is logged and sent to every subscriber, as for any data message.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import msgspec

from ..calibration import Correction
from ..protocol import Data, Sample, encode


class Corrections:
    """Correction versions by instrument id, and their application to samples."""

    def __init__(self) -> None:
        #: The version in force now, per instrument; written only here.
        self.active: dict[str, Correction] = {}
        #: Every version per instrument, oldest first; read by the data
        #: handler as its guard, written only here.
        self.versions: dict[str, list[Correction]] = {}

    def load(self, versions: Iterable[Correction]) -> None:
        """Know the versions a previous hub kept (applied and withdrawn), oldest first."""
        for version in sorted(versions, key=lambda v: v.valid_from):
            self.versions.setdefault(version.instrument_id, []).append(version)
            if version.withdrawn_at is None:
                self.active[version.instrument_id] = version

    def install(self, correction: Correction) -> Correction | None:
        """Apply `correction` from its `valid_from` on; return the version it ends, ended."""
        previous = self.active.get(correction.instrument_id)
        ended = None
        if previous is not None:
            ended = self._end(
                previous, correction.valid_from, f"superseded by {correction.calibration}"
            )
        self.active[correction.instrument_id] = correction
        self.versions.setdefault(correction.instrument_id, []).append(correction)
        return ended

    def withdraw(
        self, instrument_id: str, calibration: str, at: float, reason: str
    ) -> Correction | None:
        """Stop applying `calibration` from `at` on, if it is the one in force; return it, ended."""
        current = self.active.get(instrument_id)
        if current is None or current.calibration != calibration:
            return None
        del self.active[instrument_id]
        return self._end(current, at, reason)

    def _end(self, version: Correction, at: float, reason: str) -> Correction:
        ended = msgspec.structs.replace(version, withdrawn_at=at, withdrawn_reason=reason)
        versions = self.versions[version.instrument_id]
        versions[versions.index(version)] = ended
        return ended

    def at(self, instrument_id: str, ts: float) -> Correction | None:
        """The version in force at `ts` (``valid_from <= ts < withdrawn_at``), if any."""
        # Newest first: a live sample finds the version in force at once.
        for version in reversed(self.versions.get(instrument_id, ())):
            if version.valid_from <= ts:
                ended = version.withdrawn_at
                return version if ended is None or ts < ended else None
        return None

    def overlapping(self, instrument_id: str, since: float, until: float) -> list[Correction]:
        """The versions in force at some time of ``[since, until)``, oldest first."""
        return [
            v
            for v in self.versions.get(instrument_id, ())
            if v.valid_from < until and (v.withdrawn_at is None or v.withdrawn_at > since)
        ]

    def apply(self, message: Data, frame: bytes) -> tuple[Data, bytes]:
        """The message with corrected values added, and its new frame; unchanged if none applies."""
        versions = self.versions
        for sample in message.samples:
            if sample.instrument in versions:
                break
        else:
            return message, frame
        samples = [self.corrected_sample(sample) for sample in message.samples]
        if all(new is old for new, old in zip(samples, message.samples, strict=True)):
            return message, frame
        corrected = msgspec.structs.replace(message, samples=samples)
        return corrected, encode(corrected)

    def corrected_sample(self, sample: Sample) -> Sample:
        """`sample` with the corrected value of the version in force at its time, if any."""
        if sample.instrument not in self.versions:
            return sample
        correction = self.at(sample.instrument, sample.ts)
        if correction is None:
            return sample
        raw = sample.values.get(correction.channel)
        # bool is an int: a flag is never a reading to correct.
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            return sample
        return msgspec.structs.replace(
            sample,
            corrected={correction.channel: correction.apply(float(raw))},
            calibration=correction.calibration,
        )
