"""An approved calibration as a correction of live values, and its application to data messages."""

from __future__ import annotations

import msgspec
import pytest

from kleinmaelzung.calibration import FitModel, correction_from_record, evaluate
from kleinmaelzung.calibration.examples import approved_balance_record
from kleinmaelzung.hub.corrections import Corrections
from kleinmaelzung.protocol import Data, Sample, any_decoder, encode


def test_the_fitted_curve_corrects_a_reading_by_what_the_certificate_states() -> None:
    record = approved_balance_record()
    evaluation = evaluate(record)
    correction = correction_from_record(record, valid_from=100.0)
    assert evaluation.fit is not None
    assert correction.coefficients == evaluation.fit.coefficients
    assert correction.calibration == "KMZ-2026-0042/1" and correction.channel == "mass"
    for raw in (0.0, 99.9, 150.0):
        expected = raw + evaluation.fit.predict(raw)
        assert correction.apply(raw) == pytest.approx(expected, abs=0.00005)
    assert correction.decimals == 4  # a tenth of the display step of 0.001 g


def test_without_a_fit_the_correction_is_interpolated_between_points() -> None:
    record = approved_balance_record()
    procedure = msgspec.structs.replace(record.procedure, fit=FitModel())
    record = msgspec.structs.replace(record, procedure=procedure)
    correction = correction_from_record(record, valid_from=0.0)
    (x1, c1), (x2, c2) = correction.points[1], correction.points[2]
    assert correction.correction_at((x1 + x2) / 2) == pytest.approx((c1 + c2) / 2)
    # Held constant beyond the first and the last point.
    assert correction.correction_at(-5.0) == correction.points[0][1]
    assert correction.correction_at(500.0) == correction.points[-1][1]


def sample(instrument: str, seq: int, ts: float, **values: float | bool) -> Sample:
    return Sample(instrument=instrument, seq=seq, ts=ts, values=dict(values))


def test_only_samples_of_corrected_channels_taken_since_the_approval_are_corrected() -> None:
    corrections = Corrections()
    correction = correction_from_record(approved_balance_record(), valid_from=1000.0)
    corrections.install(correction)
    message = Data(
        samples=[
            sample("balance", 1, 999.0, mass=100.006, stable=True),  # before: untouched
            sample("kiln-air", 7, 1001.0, temperature=80.0),  # not calibrated
            sample("balance", 2, 1001.0, mass=100.006, stable=True),
            sample("balance", 3, 1002.0, stable=False),  # no reading of the channel
        ],
        run="r1",
    )
    frame = encode(message)
    corrected, new_frame = corrections.apply(message, frame)
    assert [s.corrected for s in corrected.samples[:2]] == [{}, {}]
    assert corrected.samples[2].calibration == "KMZ-2026-0042/1"
    assert corrected.samples[2].corrected == {"mass": correction.apply(100.006)}
    assert corrected.samples[2].values == {"mass": 100.006, "stable": True}  # raw kept
    assert corrected.samples[3].corrected == {}
    # The new frame is what clients and the log get; it decodes as the message.
    assert any_decoder().decode(new_frame) == corrected


def test_messages_of_instruments_without_a_correction_pass_untouched() -> None:
    corrections = Corrections()
    corrections.install(correction_from_record(approved_balance_record(), valid_from=0.0))
    message = Data(samples=[sample("kiln-air", 1, 5.0, temperature=80.0)])
    frame = encode(message)
    assert corrections.apply(message, frame) == (message, frame)
    assert corrections.apply(message, frame)[1] is frame


def test_a_sample_without_a_correction_encodes_as_before() -> None:
    # Older clients refuse unknown fields: the new ones are left out when empty.
    assert encode(sample("balance", 1, 2.0, mass=1.0)) == (
        b'{"instrument":"balance","seq":1,"ts":2.0,"values":{"mass":1.0}}'
    )


def test_withdrawing_stops_only_the_named_calibration() -> None:
    corrections = Corrections()
    correction = correction_from_record(approved_balance_record(), valid_from=0.0)
    corrections.install(correction)
    assert corrections.withdraw("balance", "KMZ-2026-0042/2", 5.0, "wrong one") is None
    ended = corrections.withdraw("balance", "KMZ-2026-0042/1", 5.0, "moved")
    assert ended == msgspec.structs.replace(correction, withdrawn_at=5.0, withdrawn_reason="moved")
    assert corrections.active == {}
    # What was in force when stays known: the past is never rewritten.
    assert corrections.at("balance", 4.9) == ended
    assert corrections.at("balance", 5.0) is None


def test_a_late_sample_is_corrected_by_the_version_in_force_at_its_time() -> None:
    corrections = Corrections()
    first = correction_from_record(approved_balance_record(), valid_from=100.0)
    second = msgspec.structs.replace(
        first, calibration="KMZ-2026-0042/2", valid_from=200.0, coefficients=(0.5,)
    )
    corrections.install(first)
    ended = corrections.install(second)
    assert ended is not None and ended.withdrawn_at == 200.0
    assert ended.withdrawn_reason == "superseded by KMZ-2026-0042/2"
    message = Data(
        samples=[
            sample("balance", 1, 99.0, mass=10.0),  # before any
            sample("balance", 2, 150.0, mass=10.0),  # the first's time, arriving now
            sample("balance", 3, 250.0, mass=10.0),
        ]
    )
    corrected, _ = corrections.apply(message, encode(message))
    assert [s.calibration for s in corrected.samples] == [
        None,
        "KMZ-2026-0042/1",
        "KMZ-2026-0042/2",
    ]
    assert corrected.samples[2].corrected == {"mass": 10.5}


def test_kmz_watch_shows_the_corrected_value_beside_the_raw_one() -> None:
    from kleinmaelzung.client.formatting import format_sample

    corrected = Sample(
        instrument="balance",
        seq=3,
        ts=0.0,
        values={"mass": 100.006},
        corrected={"mass": 100.0004},
        calibration="KMZ-2026-0007/1",
    )
    line = format_sample(corrected, {"balance": {"mass": "g"}})
    assert line.endswith("mass=100.006 g  corrected: mass=100.0004 g (KMZ-2026-0007/1)")
