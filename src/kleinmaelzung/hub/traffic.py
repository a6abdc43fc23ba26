"""The traffic log as the hub's services write it: the only writer to the store.

Every message in and out is appended here, as the bytes that crossed the
wire; samples carry what their acknowledgement needs, so that an agent hears
about a sample only once it is committed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..protocol import Error, InstrumentInfo, Message
from ..protocol.log import REFUSED, refused_entry_message
from .store import Direction, Record, Store

if TYPE_CHECKING:
    from .registry import AgentEntry


def ack_key(agent: str, run: str) -> str:
    """The key under which a record's acknowledgement is gathered: one agent run.

    An ack must reach the run whose samples were committed: a restarted agent
    counts from 0 again, and an ack for seq 5000 of its previous run would
    make it forget 5000 samples of the new one. Agent ids contain no '/'.
    """
    return f"{agent}/{run}"


def split_ack_key(key: str) -> tuple[str, str]:
    """The (agent, run) of an `ack_key`."""
    agent, _, run = key.partition("/")
    return agent, run


class TrafficLog:
    """Appends messages to the store; never blocks the event loop."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        #: Messages logged, by (direction, type), and refusals by error code:
        #: read by `/metrics` (one counter step per logged message).
        self.counts: Counter[tuple[str, str]] = Counter()
        self.refusals: Counter[str] = Counter()

    def message(
        self,
        direction: Direction,
        peer: str,
        message: Message,
        frame: bytes,
        instrument: str | None = None,
    ) -> None:
        """Log one message, as the bytes that crossed the wire."""
        tag: str = message.__struct_config__.tag  # type: ignore[assignment]
        self.counts[(direction, tag)] += 1
        self._store.append(
            Record(
                ts=self._clock(),
                direction=direction,
                peer=peer,
                type=tag,
                message=frame,
                instrument=instrument,
            )
        )

    def event(self, peer: str, type: str, message: bytes, instrument: str | None = None) -> None:
        """Log a step taken for a peer over HTTP (a calibration signed, say): a JSON object."""
        self._store.append(
            Record(
                ts=self._clock(),
                direction="in",
                peer=peer,
                type=type,
                message=message,
                instrument=instrument,
            )
        )

    def refused(self, peer: str, error: Error, frame: bytes | str) -> None:
        """Log input the hub refused, under its own kind, as valid JSON whatever it was."""
        self.counts[("in", REFUSED)] += 1
        self.refusals[error.code] += 1
        self._store.append(
            Record(
                ts=self._clock(),
                direction="in",
                peer=peer,
                type=REFUSED,
                message=refused_entry_message(error, frame),
            )
        )

    def samples(
        self,
        agent: AgentEntry,
        run: str,
        instrument: str,
        frame: bytes,
        last_seq: int,
        delivered_to: str | None,
        ts: float,
    ) -> None:
        """Log one instrument's samples; acknowledged to the agent run once committed."""
        self.counts[("in", "data")] += 1
        self._store.append(
            Record(
                ts,
                "in",
                agent.peer.name,
                "data",
                frame,
                instrument,
                delivered_to,
                (ack_key(agent.hello.agent_id, run), {instrument: last_seq}),
                run,
            )
        )

    def status_out(self, recipients: str, frame: bytes, instrument: str) -> None:
        """Log a status change sent to several subscribers, once."""
        self.counts[("out", "status")] += 1
        self._store.append(
            Record(
                ts=self._clock(),
                direction="out",
                peer=recipients,
                type="status",
                message=frame,
                instrument=instrument,
            )
        )

    def remember_instrument(
        self, info: InstrumentInfo, agent: str, last_seen: float | None
    ) -> None:
        """Keep an instrument across hub restarts."""
        self._store.save_instrument(info, agent, last_seen)

    def forget_instrument(self, instrument_id: str) -> None:
        """Stop remembering an instrument; its logged traffic stays."""
        self._store.forget_instrument(instrument_id)
