"""Every message of the Kleinmaelzung wire protocol, as frozen msgspec Structs.

Each message is a JSON object whose ``type`` field names it. The unions at the
bottom say which messages may travel in which direction; `codec` decodes
against exactly one of them. `docs/protocol.md` documents each message with an
example that a test decodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from .errors import ErrorCode
from .topics import ID_REGEX, NAME_REGEX, PATTERN_REGEX

if TYPE_CHECKING:
    from .codec import Invalid
    from .log import RefusedInput

#: Bumped on any change an old peer could misread. The hub accepts exactly the
#: versions in `SUPPORTED_PROTOCOLS`: version 4 only added messages that a
#: version-3 peer never gets unless it asks (it cannot ask), so agents and
#: clients of version 3 keep working beside a hub of version 4.
PROTOCOL_VERSION = 4
SUPPORTED_PROTOCOLS = frozenset({3, 4})

InstrumentId = Annotated[str, msgspec.Meta(pattern=ID_REGEX, description="instrument id")]
AgentId = Annotated[str, msgspec.Meta(pattern=ID_REGEX, description="agent id")]
#: A glob over instrument ids: ``*`` any run, ``?`` one character, ``[...]`` a set.
Pattern = Annotated[str, msgspec.Meta(pattern=PATTERN_REGEX)]
CorrelationId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
CommandName = Annotated[str, msgspec.Meta(pattern=NAME_REGEX)]
ChannelName = Annotated[str, msgspec.Meta(pattern=NAME_REGEX)]
Timeout = Annotated[float, msgspec.Meta(gt=0, le=300)]
RunId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
#: Seconds since the Unix epoch (UTC), as the source clock saw it.
Timestamp = float
#: A channel value: a number (an integer stays an integer), a flag (a
#: balance's "stable") or a short text.
Value = int | float | bool | str
InstrumentState = Literal["online", "offline", "faulted"]
ArgType = Literal["float", "int", "str", "bool"]
LogDirection = Literal["in", "out"]
#: Bytes as text (`transcript.escape_bytes`): printable ASCII but the
#: backslash as itself, ``\\``, ``\r``, ``\n``, ``\t``, and ``\xNN`` for any
#: other byte. Nothing in it can move a terminal's cursor or change its colours.
ESCAPED_BYTES_REGEX = r"^(?:[ -\[\]-~]|\\[\\rnt]|\\x[0-9a-f]{2})*$"
EscapedBytes = Annotated[str, msgspec.Meta(pattern=ESCAPED_BYTES_REGEX, max_length=65536)]


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base: immutable, and strict about unknown fields so typos surface."""


# --- building blocks ---------------------------------------------------------


class Channel(_Struct, frozen=True):
    """One measured quantity of an instrument."""

    name: ChannelName
    unit: str = ""
    description: str = ""


class CommandArg(_Struct, frozen=True):
    """One named argument a command accepts."""

    name: ChannelName
    type: ArgType = "float"
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None


class CommandSpec(_Struct, frozen=True):
    """A command an instrument accepts, with a one-line description."""

    name: CommandName
    description: str = ""
    args: list[CommandArg] = []
    #: A physical act whose mistake can harm (heating, dosing, motion): the
    #: dashboard asks for confirmation before sending it.
    dangerous: bool = False


class InstrumentInfo(_Struct, frozen=True):
    """What an agent announces about one instrument."""

    id: InstrumentId
    kind: str
    description: str = ""
    channels: list[Channel] = []
    commands: list[CommandSpec] = []
    poll_interval_s: float | None = None


class Sample(_Struct, frozen=True, omit_defaults=True):
    """One reading: per-instrument sequence number, source time, values by channel.

    From the hub, a sample of a channel with an approved calibration also
    carries the corrected value and the calibration that produced it; both
    are left out otherwise (older peers never see them).
    """

    instrument: InstrumentId
    seq: Annotated[int, msgspec.Meta(ge=0)]
    ts: Timestamp
    values: dict[str, Value]
    #: Hub to client: per calibrated channel, the value corrected by the
    #: instrument's approved calibration (`values` keeps the raw reading).
    corrected: dict[str, float] = {}
    #: The calibration that produced `corrected`: certificate number and
    #: revision, such as ``KMZ-2026-0007/1``.
    calibration: str | None = None


class Position(_Struct, frozen=True):
    """Where a client is in one instrument's stream: the last sample it got."""

    run: RunId | None
    seq: Annotated[int, msgspec.Meta(ge=0)]
    ts: Timestamp


class ErrorInfo(_Struct, frozen=True):
    """The error inside a failed `Reply`."""

    code: str
    message: str


class LeaseInfo(_Struct, frozen=True):
    """Who holds an instrument's control lease, and until when (hub time)."""

    holder: str
    until: Timestamp


class InstrumentMetadata(_Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a lab's admin says of an instrument at the hub (protocol 4; `kmz instrument-meta`)."""

    #: Overrides the description the agent's file gives, once set.
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    location: Annotated[str, msgspec.Meta(max_length=200)] = ""
    group: Annotated[str, msgspec.Meta(max_length=200)] = ""
    owner: Annotated[str, msgspec.Meta(max_length=200)] = ""
    #: Days from a passed calibration to the next one due.
    calibration_interval_days: Annotated[int, msgspec.Meta(gt=0, le=36500)] | None = None


class InstrumentRecord(_Struct, frozen=True):
    """The hub's view of one instrument, as listed to clients."""

    id: InstrumentId
    kind: str
    agent: str
    state: InstrumentState
    reason: str = ""
    last_seen: Timestamp | None = None
    description: str = ""
    channels: list[Channel] = []
    commands: list[CommandSpec] = []
    #: Hub time since when `state` holds; None if the hub does not know (it
    #: restarted since, and the instrument has not connected again).
    since: Timestamp | None = None
    #: The control lease, while someone holds one.
    lease: LeaseInfo | None = None
    #: What the hub holds of it (protocol 4): absent when it holds nothing, and
    #: to peers of version 3. `description` above is the one to show already.
    metadata: InstrumentMetadata | msgspec.UnsetType = msgspec.UNSET


class AgentRecord(_Struct, frozen=True, kw_only=True):
    """The hub's view of one agent it has seen, online or not (`GET /api/agents`, `kmz agents`)."""

    id: AgentId
    software: str
    #: The run of its current connection; None while it is not connected.
    run: RunId | None
    #: Hub time of the handshake; None while it is not connected.
    connected_since: Timestamp | None
    instruments: list[InstrumentId]
    #: Samples the agent holds that the hub has not acknowledged; None until
    #: the agent said (`agent_state`).
    spool_depth: int | None = None
    #: Time of the oldest of them.
    spool_oldest: Timestamp | None = None
    #: Samples its spool dropped (each named by a `gap`) since it started.
    dropped: int | None = None
    #: Its clock minus the hub's, in seconds, estimated from its live samples.
    clock_offset_s: float | None = None
    #: False when the offset is beyond the hub's bound (1 s by default).
    clock_ok: bool = True
    #: Per instrument, the newest seq logged of its current run.
    logged_seqs: dict[str, int] = {}
    #: Whether it is connected now.
    online: bool = True
    #: The host name it reported (protocol 4, `agent_info`).
    host: str = ""
    #: The protocol version it spoke on its latest connection.
    protocol: int | None = None
    #: Seconds since its process started, as it last said (connected agents).
    uptime_s: float | None = None
    #: Hub times of its latest connection and disconnection, and why it left.
    last_connected: Timestamp | None = None
    last_disconnected: Timestamp | None = None
    disconnect_reason: str = ""
    #: The configuration revision it runs (0: its own file); None if it never said.
    config_revision: int | None = None
    #: Whether it runs configurations sent from the hub; None if it never said.
    remote_config: Literal["accept", "refuse"] | None = None


class LogEntry(_Struct, frozen=True):
    """One traffic-log entry; `message` is the logged message as raw JSON.

    Embedded as it was logged: a reader never fails on an entry whose message
    it does not know, and decodes it further only if it wants to
    (`decode_message`, `message_object`).
    """

    id: int
    ts: float
    direction: LogDirection
    #: The sender of an inbound message, the recipient of an outbound one;
    #: several recipients of one status are listed comma-separated.
    peer: str
    instrument: str | None
    type: str
    message: msgspec.Raw
    #: For inbound data: the clients it was forwarded to, comma-separated.
    delivered_to: str | None = None

    def __repr__(self) -> str:
        # msgspec.Raw shows only its address: show the JSON instead.
        shown = {name: repr(getattr(self, name)) for name in self.__struct_fields__}
        shown["message"] = bytes(self.message).decode(errors="replace")
        return "LogEntry(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")"

    def decode_message(self) -> Message | Invalid:
        """The message as a protocol message, or `Invalid` (say, a `refused` entry)."""
        # `log` imports this module: its decoders are looked up when first used.
        from .log import decode_logged

        return decode_logged(bytes(self.message))

    def message_object(self) -> dict[str, Any]:
        """The message as plain Python objects.

        Hubs before schema version 4 logged refused input as a JSON string
        under type `error`: such a message comes back as ``{"frame": text}``.
        """
        value = msgspec.json.decode(self.message)
        return value if isinstance(value, dict) else {"frame": value}

    def refusal(self) -> RefusedInput | None:
        """For a `refused` entry, why and what was refused; None for any other."""
        from .log import decode_refusal

        return decode_refusal(self)


class ChannelSeries(_Struct, frozen=True):
    """One channel's statistics per bucket, parallel to `History.t`."""

    count: list[int]
    min: list[float | None]
    max: list[float | None]
    mean: list[float | None]


class CorrectionSpan(_Struct, frozen=True):
    """When one calibration's correction applied to a channel, within a `History`'s range."""

    #: Certificate number and revision, as samples name it (``KMZ-2026-0007/1``).
    calibration: str
    channel: str
    #: ``since <= ts < until``, clipped to the history's range.
    since: float
    until: float


class History(_Struct, frozen=True, omit_defaults=True):
    """One instrument's channels over a time range, downsampled (`protocol.history`)."""

    instrument: str
    since: float
    until: float
    #: The width of each bucket, in seconds.
    every: float
    channels: list[Channel]
    #: The start time of each bucket that holds a sample, oldest first.
    t: list[float]
    series: dict[str, ChannelSeries]
    #: Per calibrated channel, its corrected values per bucket, parallel to `t`
    #: (count 0 where no sample of the bucket was corrected); `series` stays raw.
    corrected: dict[str, ChannelSeries] = {}
    #: Which calibration corrected which channel when, oldest first.
    calibrations: list[CorrectionSpan] = []


# --- messages ----------------------------------------------------------------


class AgentHello(_Struct, frozen=True, tag="agent_hello"):
    """First message of an agent: who it is and which instruments it serves."""

    protocol: int
    agent_id: AgentId
    instruments: list[InstrumentInfo]
    #: Random per agent process start; the run of its `data` that name none.
    #: Within one run the hub drops samples at or below the newest seq it
    #: has logged, so an agent may resend everything not yet acknowledged.
    run: RunId
    token: str | None = None
    software: str = ""


class ClientHello(_Struct, frozen=True, tag="client_hello"):
    """First message of a client."""

    protocol: int
    token: str | None = None
    name: str = ""


class Welcome(_Struct, frozen=True, tag="welcome"):
    """The hub's answer to a hello: the handshake is complete."""

    protocol: int
    hub: str
    session: str
    server_time: Timestamp
    #: The hub's monotonic clock in seconds when it sent this; command
    #: deadlines are on this clock (`deadlines.HubClock`).
    clock: float | None = None


class Data(_Struct, frozen=True, tag="data"):
    """A batch of samples, of one or several instruments, oldest first."""

    samples: list[Sample]
    #: The agent run the samples belong to; None: the run of the agent's
    #: hello. Seqs only grow within a run and instrument, so `(run, seq)`
    #: names a sample exactly: clients drop a repeat by it, and resume from it.
    run: RunId | None = None
    #: From an agent: these samples were taken before the current connection
    #: (its spool's backlog). The hub logs and acknowledges them but does not
    #: send them to live subscribers, who get them from the log.
    backlog: bool = False


class Gap(_Struct, frozen=True, tag="gap"):
    """Samples that will never arrive: the agent dropped them, and says exactly which.

    From an agent (with its `id`, acknowledged by the hub once logged) and
    from the hub to the instrument's subscribers.
    """

    instrument: InstrumentId
    run: RunId
    first_seq: Annotated[int, msgspec.Meta(ge=0)]
    last_seq: Annotated[int, msgspec.Meta(ge=0)]
    #: How many samples in the range were dropped (seqs may have holes of
    #: their own: a reading that failed takes no seq).
    count: Annotated[int, msgspec.Meta(ge=0)]
    reason: str
    #: The agent's number for this gap, echoed in `Ack.gaps`.
    id: int | None = None


class AgentState(_Struct, frozen=True, tag="agent_state", omit_defaults=True):
    """Agent to hub, every few seconds while something changes: what its spool holds,
    and how the agent's process fares (for `/metrics`, `/api/agents` and `kmz agents`)."""

    spool_depth: Annotated[int, msgspec.Meta(ge=0)]
    spool_oldest: Timestamp | None
    dropped: Annotated[int, msgspec.Meta(ge=0)]
    #: Seconds since the agent's process started.
    uptime_s: Annotated[float, msgspec.Meta(ge=0)] | None = None
    #: Its process's CPU use since the previous report, % of one core.
    cpu_pct: Annotated[float, msgspec.Meta(ge=0)] | None = None
    #: Its process's resident memory, bytes.
    rss_bytes: Annotated[int, msgspec.Meta(ge=0)] | None = None


class Missed(_Struct, frozen=True, tag="missed"):
    """Hub to client: live samples this client did not get because it fell behind.

    They were logged: a client that must have them reads them from the log.
    """

    instrument: InstrumentId
    run: RunId | None
    first_seq: Annotated[int, msgspec.Meta(ge=0)]
    last_seq: Annotated[int, msgspec.Meta(ge=0)]
    count: Annotated[int, msgspec.Meta(ge=0)]


class Status(_Struct, frozen=True, tag="status"):
    """An instrument went online, offline or faulted, and why."""

    instrument: InstrumentId
    state: InstrumentState
    ts: Timestamp
    reason: str = ""
    #: From the hub: the instrument's control lease while one is held (an
    #: agent's is replaced by the hub's).
    lease: LeaseInfo | None = None


class Command(_Struct, frozen=True, tag="command"):
    """Ask an instrument to do something; answered by a `Reply` with the same id."""

    id: CorrelationId
    instrument: InstrumentId
    name: CommandName
    args: dict[str, Any] = {}
    timeout_s: Timeout = 5.0
    #: Set by the hub on commands it forwards to an agent, on the clock of
    #: its `welcome`: the agent must not start the command after it. A
    #: client's value is replaced by the hub's.
    deadline: float | None = None
    #: An idempotency key, chosen by the client: a command sent again with
    #: the same key (after a lost reply) runs at most once at the instrument,
    #: and every attempt gets the first outcome. Kept a day, per instrument.
    key: IdempotencyKey | None = None


class Reply(_Struct, frozen=True, tag="reply"):
    """The outcome of a `Command`: ok with a result, or an error."""

    id: CorrelationId
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None


class Ack(_Struct, frozen=True, tag="ack"):
    """Hub to agent: samples up to these sequence numbers are durably logged."""

    seqs: dict[str, int]
    #: The hub's monotonic clock when it sent this, as in `welcome`.
    clock: float | None = None
    #: The agent run the seqs belong to (None from hubs before runs were
    #: named here: the run of the current connection).
    run: RunId | None = None
    #: Ids of `gap` messages now durably logged.
    gaps: list[int] = []


class Subscribe(_Struct, frozen=True, tag="subscribe"):
    """Start receiving data and status of instruments matching the patterns."""

    id: CorrelationId
    patterns: Annotated[list[Pattern], msgspec.Meta(min_length=1, max_length=256)]
    #: What the hub does when this client falls so far behind that its send
    #: queue is full: `latest` drops the oldest samples and says which
    #: (`missed`); `disconnect` closes the connection (4005) instead, for a
    #: consumer that must not skip. One connection has one policy: the
    #: strictest any of its subscriptions asked for.
    overflow: Literal["latest", "disconnect"] = "latest"
    #: Resume where this client left off, per instrument: what it missed is
    #: sent from the log first, then the live stream, with no sample twice
    #: and none left out (`Subscribed.recovered` says whether that held).
    since: Annotated[dict[InstrumentId, Position], msgspec.Meta(max_length=1024)] = {}
    #: Or: everything the matched instruments measured after this time (their
    #: agents' clocks), from the log, then live.
    since_ts: Timestamp | None = None
    #: Also send the samples agents send from their spools (taken while they
    #: had no connection), as they arrive; by default only live samples come.
    backlog: bool = False


class Unsubscribe(_Struct, frozen=True, tag="unsubscribe"):
    """Stop receiving what the given patterns subscribed to."""

    id: CorrelationId
    patterns: Annotated[list[Pattern], msgspec.Meta(min_length=1, max_length=256)]


class Subscribed(_Struct, frozen=True, tag="subscribed"):
    """Answer to (un)subscribe: all active patterns and the instruments they match now."""

    id: CorrelationId
    patterns: list[str]
    instruments: list[str]
    #: For a subscribe with `since` or `since_ts`: true if everything asked
    #: for follows, from the log; false (with the instruments in
    #: `not_recovered`) if a position was not in the log (reset, or past its
    #: retention) or more was missed than one recovery sends. None otherwise.
    recovered: bool | None = None
    not_recovered: list[str] = []


class ListInstruments(_Struct, frozen=True, tag="list_instruments"):
    """Ask for every instrument the hub knows."""

    id: CorrelationId


class InstrumentList(_Struct, frozen=True, tag="instrument_list"):
    """Answer to `ListInstruments`."""

    id: CorrelationId
    instruments: list[InstrumentRecord]


class QueryLog(_Struct, frozen=True, tag="log_query", omit_defaults=True):
    """Client to hub (protocol 4): the traffic-log entries matching every filter given.

    The filters of ``GET /api/log``, typed; answered by one or more `LogResult`
    with the same id, the last with ``done: true``, or an `Error` with the id.
    """

    id: CorrelationId
    #: Hub time: entries with ``since <= ts < until``.
    since: Timestamp | None = None
    until: Timestamp | None = None
    #: An instrument id or a glob over ids.
    instrument: Pattern | None = None
    #: A glob over peer names, matched against each sender or recipient.
    peer: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    direction: LogDirection | None = None
    #: A message type, ``command`` (commands and replies), ``refused``, ``raw``.
    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    #: Text the logged message contains (case-insensitive).
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    order: Literal["newest", "oldest"] = "newest"
    #: Entries at most, over all the results (up to the hub's `max_log_entries`).
    limit: Annotated[int, msgspec.Meta(ge=1)] = 100
    #: A `LogResult.next_cursor`: continue after the entries it ended with.
    cursor: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] | None = None


class LogResult(_Struct, frozen=True, tag="log_result"):
    """Hub to client: entries answering a `QueryLog`, in its order, each frame within the limit."""

    id: CorrelationId
    entries: list[LogEntry]
    #: Where a next query continues (its ``cursor``) after these entries; None
    #: when the log holds no more that match.
    next_cursor: str | None = None
    #: The last result for this query.
    done: bool = True


class QueryHistory(_Struct, frozen=True, tag="history_query", omit_defaults=True):
    """Client to hub (protocol 4): one instrument's channels over a time range, downsampled.

    The parameters of ``GET /api/history/INSTRUMENT``; answered by a
    `HistoryResult` with the same id, or an `Error` with the id.
    """

    id: CorrelationId
    instrument: InstrumentId
    #: Default: an hour before `until`.
    since: Timestamp | None = None
    #: Default: the hub's now.
    until: Timestamp | None = None
    #: Bucket width in seconds; without it, `points` buckets over the range.
    every: Annotated[float, msgspec.Meta(gt=0)] | None = None
    points: Annotated[int, msgspec.Meta(ge=1)] | None = None
    #: Channel names; empty: every numeric channel.
    channels: Annotated[list[str], msgspec.Meta(max_length=256)] = []


class HistoryResult(_Struct, frozen=True, tag="history_result"):
    """Hub to client: the answer to a `QueryHistory`."""

    id: CorrelationId
    history: History


class RawTraffic(_Struct, frozen=True, tag="raw", omit_defaults=True):
    """Agent to hub (protocol 4): bytes exchanged with an instrument's port during a transcript.

    Sent only while a transcript the hub asked for runs (the ``transcript``
    command), within its byte rate; logged by the hub as entries of type `raw`.
    """

    instrument: InstrumentId
    #: The agent's clock when the bytes were written or read.
    ts: Timestamp
    #: ``tx``: the agent wrote them to the instrument; ``rx``: it read them.
    direction: Literal["tx", "rx"]
    #: The bytes, escaped (`ESCAPED_BYTES_REGEX`).
    data: EscapedBytes
    #: Bytes left out since the previous message of this instrument, for the rate.
    dropped: Annotated[int, msgspec.Meta(ge=0)] = 0


class ConfigPush(_Struct, frozen=True, tag="config_push"):
    """Hub to agent (protocol 4): run this instrument configuration, held at the hub.

    Answered by a `ConfigResult` with the same id. The agent checks it as it
    checks its own file and runs it live, or refuses it and changes nothing.
    """

    id: CorrelationId
    #: The hub's number for this configuration of this agent (1, 2, ...; 0 is
    #: the agent's own file as it first reported it).
    revision: Annotated[int, msgspec.Meta(ge=0)]
    #: The ``[[instruments]]`` tables, as TOML text; the hub URL, the agent's
    #: id, its token and its spool stay in the agent's own file.
    config: Annotated[str, msgspec.Meta(max_length=262144)]
    #: The name errors give the text (the admin's file name, ``lab.toml``).
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "hub"


class InstrumentOutcome(_Struct, frozen=True, omit_defaults=True):
    """What a configuration change did to one instrument, inside a `ConfigResult`."""

    id: InstrumentId
    change: Literal["added", "removed", "changed", "unchanged"]
    #: Its state once its port was first tried (``offline`` once removed).
    state: InstrumentState
    #: Why it is faulted: the port that cannot open, and what the driver said.
    reason: str = ""


class ConfigResult(_Struct, frozen=True, tag="config_result", omit_defaults=True):
    """Agent to hub (protocol 4): the outcome of a `ConfigPush` with the same id."""

    id: CorrelationId
    #: The revision the agent runs now: the pushed one if `ok`, else the one before.
    revision: Annotated[int, msgspec.Meta(ge=0)]
    ok: bool
    #: Why it was refused (`invalid_config` with the located error, or
    #: `remote_config_refused`); nothing changed at the agent.
    error: ErrorInfo | None = None
    #: Per instrument of the old and new configurations, what became of it.
    instruments: list[InstrumentOutcome] = []


class AgentInfo(_Struct, frozen=True, tag="agent_info", omit_defaults=True):
    """Agent to hub (protocol 4): about itself, after each welcome and each configuration change."""

    #: The host name of the machine it runs on.
    host: Annotated[str, msgspec.Meta(max_length=255)] = ""
    #: The configuration revision it runs: 0 for its own file, else the hub's.
    config_revision: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: Whether it runs configurations the hub sends (``accept``) or only its
    #: own file (``refuse``).
    remote_config: Literal["accept", "refuse"] = "accept"
    #: The instrument configuration it runs, as ``[[instruments]]`` tables in TOML.
    config: Annotated[str, msgspec.Meta(max_length=262144)] = ""
    #: After a configuration change: every instrument it serves now (they
    #: replace those of its hello), sent before any sample of a new one.
    instruments: list[InstrumentInfo] | None = None


class Error(_Struct, frozen=True, tag="error"):
    """Something the peer sent was refused; `id` names the request when known."""

    code: str
    message: str
    id: str | None = None

    def code_enum(self) -> ErrorCode:
        """The code as an `ErrorCode`; codes from newer peers map to INTERNAL_ERROR."""
        try:
            return ErrorCode(self.code)
        except ValueError:
            return ErrorCode.INTERNAL_ERROR


# --- directions ----------------------------------------------------------------

AgentMessage = (
    AgentHello
    | Data
    | Gap
    | AgentState
    | Status
    | Reply
    | RawTraffic
    | AgentInfo
    | ConfigResult
    | Error
)
"""Agent to hub."""
HubToAgentMessage = Welcome | Command | Ack | ConfigPush | Error
"""Hub to agent."""
ClientMessage = (
    ClientHello | Subscribe | Unsubscribe | ListInstruments | Command | QueryLog | QueryHistory
)
"""Client to hub."""
HubToClientMessage = (
    Welcome
    | Data
    | Gap
    | Missed
    | Status
    | Reply
    | Subscribed
    | InstrumentList
    | LogResult
    | HistoryResult
    | Error
)
"""Hub to client."""

Message = (
    AgentHello
    | ClientHello
    | Welcome
    | Data
    | Gap
    | AgentState
    | Missed
    | Status
    | Command
    | Reply
    | Ack
    | Subscribe
    | Unsubscribe
    | Subscribed
    | ListInstruments
    | InstrumentList
    | QueryLog
    | LogResult
    | QueryHistory
    | HistoryResult
    | RawTraffic
    | ConfigPush
    | ConfigResult
    | AgentInfo
    | Error
)
"""Any message, in any direction."""

ALL_MESSAGE_TYPES: tuple[type[msgspec.Struct], ...] = (
    AgentHello,
    ClientHello,
    Welcome,
    Data,
    Gap,
    AgentState,
    Missed,
    Status,
    Command,
    Reply,
    Ack,
    Subscribe,
    Unsubscribe,
    Subscribed,
    ListInstruments,
    InstrumentList,
    QueryLog,
    LogResult,
    QueryHistory,
    HistoryResult,
    RawTraffic,
    ConfigPush,
    ConfigResult,
    AgentInfo,
    Error,
)
