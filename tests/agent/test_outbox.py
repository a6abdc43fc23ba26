"""The outbox keeps samples until acknowledged, resends after reconnect, drops oldest when full."""

from __future__ import annotations

from kleinmaelzung.agent import Outbox
from kleinmaelzung.protocol import Sample


def sample(instrument: str, seq: int) -> Sample:
    return Sample(instrument=instrument, seq=seq, ts=float(seq), values={"v": 1.0})


def test_sent_samples_stay_until_acknowledged_and_are_resent_after_rewind() -> None:
    outbox = Outbox(100)
    for seq in range(5):
        outbox.put(sample("a", seq))
        outbox.put(sample("b", seq))
    first = outbox.take_unsent(4)
    assert [(s.instrument, s.seq) for s in first] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert outbox.unsent == 6
    outbox.acknowledge({"a": 1})
    assert len(outbox) == 8 and outbox.unsent == 6
    outbox.rewind()  # reconnect: b0, b1 were sent but never acknowledged
    resent = outbox.take_unsent(100)
    assert [(s.instrument, s.seq) for s in resent][:2] == [("b", 0), ("b", 1)]
    assert len(resent) == 8
    outbox.acknowledge({"a": 4, "b": 4})
    assert len(outbox) == 0


def test_full_outbox_drops_the_oldest_and_counts() -> None:
    outbox = Outbox(3)
    for seq in range(5):
        outbox.put(sample("a", seq))
    assert outbox.dropped == 2
    assert [s.seq for s in outbox.take_unsent(10)] == [2, 3, 4]


def test_dropping_sent_samples_keeps_the_send_position_right() -> None:
    outbox = Outbox(3)
    for seq in range(3):
        outbox.put(sample("a", seq))
    outbox.take_unsent(2)
    outbox.put(sample("a", 3))  # drops seq 0, which was sent
    assert [s.seq for s in outbox.take_unsent(10)] == [2, 3]
