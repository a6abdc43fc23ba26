"""Approved calibrations applied to the live stream: the hub's table of active corrections.

The only writer of `active` (instrument id -> `Correction`). The data
handler calls `apply` for each data message only while some correction is
active, and `apply` returns the message and frame untouched unless one of
its samples belongs to a corrected instrument: instruments without a
calibration pay one dict lookup per sample, and nothing at all while no
calibration is applied anywhere.

A corrected sample carries ``corrected`` (the corrected value of the
calibrated channel) and ``calibration`` (certificate number and revision)
beside its raw ``values``; the message is encoded once, and that frame is
what is logged and sent to every subscriber, as for any data message.
"""

from __future__ import annotations

import math

import msgspec

from ..calibration import Correction
from ..protocol import Data, Sample, encode


class Corrections:
    """Active corrections by instrument id, and their application to data messages."""

    def __init__(self) -> None:
        #: Read by the data handler as its guard; written only here.
        self.active: dict[str, Correction] = {}

    def install(self, correction: Correction) -> Correction | None:
        """Apply `correction` from its `valid_from` on; return the version it replaces."""
        previous = self.active.get(correction.instrument_id)
        self.active[correction.instrument_id] = correction
        return previous

    def withdraw(self, instrument_id: str, calibration: str) -> Correction | None:
        """Stop applying the correction of `calibration`, if it is the active one."""
        current = self.active.get(instrument_id)
        if current is None or current.calibration != calibration:
            return None
        del self.active[instrument_id]
        return current

    def apply(self, message: Data, frame: bytes) -> tuple[Data, bytes]:
        """The message with corrected values added, and its new frame; unchanged if none applies."""
        active = self.active
        for sample in message.samples:
            if sample.instrument in active:
                break
        else:
            return message, frame
        samples = [
            self._corrected(sample, active.get(sample.instrument)) for sample in message.samples
        ]
        corrected = msgspec.structs.replace(message, samples=samples)
        return corrected, encode(corrected)

    @staticmethod
    def _corrected(sample: Sample, correction: Correction | None) -> Sample:
        if correction is None or sample.ts < correction.valid_from:
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
