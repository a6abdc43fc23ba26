"""Bytes to messages and back, within size and nesting limits.

Decoding never raises: bad input becomes an `Error` value whose code says what
kind of wrong it was and whose message says where (msgspec's JSON path).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Generic, NamedTuple, TypeVar, get_args

import msgspec

from .errors import ErrorCode
from .limits import Limits
from .messages import (
    ALL_MESSAGE_TYPES,
    AgentId,
    AgentMessage,
    ChannelName,
    ClientMessage,
    Command,
    CommandName,
    Error,
    EscapedBytes,
    HubToAgentMessage,
    HubToClientMessage,
    InstrumentId,
    Message,
    Pattern,
    Reply,
    Sample,
)
from .topics import ID_RULE, NAME_RULE, PATTERN_RULE

T = TypeVar("T")


class Invalid(NamedTuple):
    """A frame that did not decode; `error` says why, ready to send back."""

    error: Error


_encoder = msgspec.json.Encoder()


class _Probe(msgspec.Struct):
    """What can be salvaged from a message that failed to decode."""

    type: Any = None
    id: Any = None


_probe_decoder = msgspec.json.Decoder(_Probe)
TAGS: dict[str, type[msgspec.Struct]] = {str(t.__struct_config__.tag): t for t in ALL_MESSAGE_TYPES}


class _Rule(NamedTuple):
    """What kind of string must match a pattern, and the pattern in words."""

    kind: str  # "id", "pattern" or "name"; the JSON path refines it (`_what`)
    words: str


def _regex_of(annotated: Any) -> str:
    """The regex of an `Annotated[str, msgspec.Meta(pattern=...)]` from messages.py."""
    for meta in get_args(annotated)[1:]:
        if isinstance(meta, msgspec.Meta) and meta.pattern is not None:
            return meta.pattern
    raise TypeError(f"{annotated} has no pattern")


#: Each pattern of the schema in words, by regex, so that a user reads "a command
#: name is a lowercase letter ..." instead of msgspec's "Expected `str` matching
#: regex ...". The regexes come from the message types, never copied; a test
#: fails when the schema gains a pattern this table lacks.
PATTERN_RULES: dict[str, _Rule] = {
    _regex_of(InstrumentId): _Rule("id", ID_RULE),
    _regex_of(AgentId): _Rule("id", ID_RULE),
    _regex_of(Pattern): _Rule("pattern", PATTERN_RULE),
    _regex_of(CommandName): _Rule("name", NAME_RULE),
    _regex_of(ChannelName): _Rule("name", NAME_RULE),
    _regex_of(EscapedBytes): _Rule(
        "escaped bytes", r"printable ASCII, with \\ \r \n \t and \xNN (lowercase) for other bytes"
    ),
}


def _pattern_errors() -> dict[str, str]:
    """msgspec's own text for a string that breaks each pattern, to its regex."""
    errors: dict[str, str] = {}
    for annotated, bad in (
        (InstrumentId, ""),
        (AgentId, ""),
        (Pattern, ""),
        (CommandName, ""),
        (ChannelName, ""),
        (EscapedBytes, "\x1b"),  # escaped bytes may be empty, never hold ESC itself
    ):
        try:
            msgspec.convert(bad, type=annotated)
        except msgspec.ValidationError as exc:
            errors[str(exc)] = _regex_of(annotated)
    return errors


_PATTERN_ERRORS = _pattern_errors()
#: Fields whose bad value answers the code the same question's HTTP route
#: answers (``GET /api/log?instrument=Kiln``: ``invalid_instrument_id``), not
#: ``invalid_message``: a client asking either way handles one code.
_FIELD_CODES: dict[tuple[str, str], ErrorCode] = {
    ("log_query", "$.instrument"): ErrorCode.INVALID_INSTRUMENT_ID,
    ("history_query", "$.instrument"): ErrorCode.INVALID_INSTRUMENT_ID,
}
_AT = re.compile(r"^(?P<what>.*) - at `(?P<path>\$[^`]*)`$")
_PATH_STEP = re.compile(r"\.(?P<key>[A-Za-z_][A-Za-z0-9_]*)|\[(?P<index>\d+)\]")


def encode(message: msgspec.Struct) -> bytes:
    """Encode one message to JSON bytes."""
    return _encoder.encode(message)


def encode_samples(samples: Sequence[Sample]) -> bytes:
    """Encode samples as a JSON array, the body of a `data` message's `samples`."""
    return _encoder.encode(samples)


# A data frame as `encode` lays it out: the hub forwards an agent's samples
# array as it arrived, and joins the arrays queued for one client into one
# frame (one per run), without decoding and encoding them again.
_DATA_HEAD = b'{"type":"data","samples":['
_DATA_TAIL = b"]}"
# Samples hold no arrays, so the only `]` before this is the array's own:
# and inside a JSON string a `"` is escaped, so this is never inside a value.
_RUN_TAIL = b'],"run":'


def samples_array(frame: bytes) -> bytes | None:
    """The samples array of a data frame as `encode` lays it out, or None if laid out otherwise."""
    if frame.startswith(_DATA_HEAD):
        if frame.endswith(_DATA_TAIL):
            return frame[len(_DATA_HEAD) - 1 : -len(_DATA_TAIL) + 1]
        end = frame.rfind(_RUN_TAIL)
        if end > 0 and frame.endswith(b"}"):
            return frame[len(_DATA_HEAD) - 1 : end + 1]
    return None


def data_frame(arrays: Sequence[bytes], run: bytes = b"") -> bytes:
    """One data frame holding the samples of several encoded samples arrays, in order.

    `run` is the run's encoded JSON string (quotes included), or empty for none.
    """
    # A list, not a generator: join() builds one anyway, and this is per frame.
    body = _DATA_HEAD + b",".join([a[1:-1] for a in arrays if len(a) > 2])
    if run:
        return body + _RUN_TAIL + run + b"}"
    return body + _DATA_TAIL


def encode_run(run: str | None) -> bytes:
    """A run as it goes into `data_frame`."""
    return _encoder.encode(run) if run is not None else b""


class Decoder(Generic[T]):
    """Decodes messages of one direction; anything else becomes an `Error`."""

    def __init__(
        self, union: Any, limits: Limits | None = None, *, max_bytes: int | None = None
    ) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(union)
        self._limits = limits or Limits()
        self._max_bytes = self._limits.max_message_bytes if max_bytes is None else max_bytes
        self._allowed = {
            str(t.__struct_config__.tag) for t in ALL_MESSAGE_TYPES if _in_union(t, union)
        }

    def decode(self, data: bytes | str) -> T | Invalid:
        """Decode one frame; return the message or an `Error` describing the problem."""
        if len(data) > self._max_bytes:
            return Invalid(
                Error(
                    code=ErrorCode.MESSAGE_TOO_LARGE,
                    message=f"message of {len(data)} bytes exceeds the limit of "
                    f"{self._max_bytes} bytes",
                )
            )
        try:
            message = self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            return Invalid(self._explain(data, str(exc)))
        except UnicodeDecodeError as exc:
            # A binary frame whose strings are not UTF-8: msgspec raises this
            # bare (found by tests/e2e/fuzz_run.py; it dropped the connection
            # with a traceback in the hub's log).
            return Invalid(_not_utf8(exc))
        except msgspec.DecodeError as exc:
            return Invalid(Error(code=ErrorCode.INVALID_JSON, message=f"not valid JSON: {exc}"))
        except RecursionError:
            # msgspec parses free JSON (a command's args) recursively: a 2 KB
            # frame of brackets reaches the interpreter's recursion limit.
            return Invalid(self._too_deep(data))
        if isinstance(message, Command | Reply):
            free = message.args if isinstance(message, Command) else message.result
            if _deeper_than(free, self._limits.max_nesting_depth):
                return Invalid(self._too_deep(data, message.id))
        return message

    def _too_deep(self, data: bytes | str, request_id: str | None = None) -> Error:
        return Error(
            code=ErrorCode.NESTING_TOO_DEEP,
            message="arrays and objects may be nested at most "
            f"{self._limits.max_nesting_depth} deep in a message's free-form JSON "
            "(a command's args, a reply's result)",
            id=request_id,
        )

    def _explain(self, data: bytes | str, detail: str) -> Error:
        try:
            return self._explain_valid_json(data, detail)
        except RecursionError:
            return self._too_deep(data)
        except UnicodeDecodeError as exc:
            return _not_utf8(exc)

    def _explain_valid_json(self, data: bytes | str, detail: str) -> Error:
        try:
            # msgspec validates while it parses, so a type error can be found
            # before a syntax error further on; check the syntax first.
            parsed = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            return Error(code=ErrorCode.INVALID_JSON, message=f"not valid JSON: {exc}")
        try:
            probe = _probe_decoder.decode(data)
        except msgspec.ValidationError:
            return Error(
                code=ErrorCode.INVALID_MESSAGE,
                message=f"a message must be a JSON object with a string field 'type': {detail}",
            )
        request_id = probe.id if isinstance(probe.id, str) and 0 < len(probe.id) <= 64 else None
        if probe.type is None:
            return Error(
                code=ErrorCode.INVALID_MESSAGE,
                message="a message must have a string field 'type'",
                id=request_id,
            )
        if not isinstance(probe.type, str) or probe.type not in self._allowed:
            known = ", ".join(sorted(self._allowed))
            return Error(
                code=ErrorCode.UNKNOWN_TYPE,
                message=f"unknown message type {probe.type!r} here; expected one of: {known}",
                id=request_id,
            )
        located = _AT.match(detail)
        path = located["path"] if located else ""
        return Error(
            code=_FIELD_CODES.get((probe.type, path), ErrorCode.INVALID_MESSAGE),
            message=f"invalid {probe.type!r} message: {_in_words(detail, parsed)}",
            id=request_id,
        )


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects in `value` nest deeper than `limit` (a container is depth 1)."""
    if not isinstance(value, dict | list):
        return False
    # Iterative, so that checking depth cannot itself run out of stack.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > limit:
            return True
        children = container.values() if isinstance(container, dict) else container
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _in_words(detail: str, parsed: Any) -> str:
    """msgspec's `detail`, with a broken pattern said in words; the JSON path stays."""
    located = _AT.match(detail)
    regex = _PATTERN_ERRORS.get(located["what"]) if located else None
    if located is None or regex is None:
        return detail
    path = located["path"]
    kind, rule = PATTERN_RULES[regex]
    what = _what(kind, path)
    value = _value_at(parsed, path)
    shown = f"{value[:70]!r}{'...' if len(value) > 70 else ''}" if isinstance(value, str) else "it"
    article = "an" if what[0] in "aeiou" else "a"
    return f"at `{path}`: {shown} is not a valid {what}; {article} {what} is {rule}"


def _what(kind: str, path: str) -> str:
    """Name what broke a pattern; one regex serves several fields, the path says which."""
    steps = path.split(".")
    owner = steps[-2] if len(steps) >= 2 else ""
    if kind == "id":
        return "agent id" if steps[-1] == "agent_id" else "instrument id"
    if kind == "name":
        if owner.startswith("channels["):
            return "channel name"
        if owner.startswith("args["):
            return "argument name"
        return "command name"
    return kind


def _value_at(parsed: Any, path: str) -> Any:
    """The JSON value at a msgspec path such as `$.instruments[0].name`, or None."""
    value = parsed
    position = 1  # after "$"
    for step in _PATH_STEP.finditer(path, 1):
        if step.start() != position:
            return None
        position = step.end()
        if step["key"] is not None:
            if not isinstance(value, dict) or step["key"] not in value:
                return None
            value = value[step["key"]]
        else:
            index = int(step["index"])
            if not isinstance(value, list) or index >= len(value):
                return None
            value = value[index]
    return value if position == len(path) else None


def _in_union(t: type[msgspec.Struct], union: Any) -> bool:
    args = getattr(union, "__args__", None)
    return t in args if args is not None else t is union


def agent_decoder(limits: Limits | None = None) -> Decoder[AgentMessage]:
    """Decoder for what an agent sends to the hub."""
    return Decoder(AgentMessage, limits)


def client_decoder(limits: Limits | None = None) -> Decoder[ClientMessage]:
    """Decoder for what a client sends to the hub."""
    return Decoder(ClientMessage, limits)


def hub_to_agent_decoder(limits: Limits | None = None) -> Decoder[HubToAgentMessage]:
    """Decoder for what the hub sends to an agent (up to the hub's own limit)."""
    limits = limits or Limits()
    return Decoder(HubToAgentMessage, limits, max_bytes=limits.max_hub_message_bytes)


def hub_to_client_decoder(limits: Limits | None = None) -> Decoder[HubToClientMessage]:
    """Decoder for what the hub sends to a client (up to the hub's own limit)."""
    limits = limits or Limits()
    return Decoder(HubToClientMessage, limits, max_bytes=limits.max_hub_message_bytes)


def any_decoder(limits: Limits | None = None) -> Decoder[Message]:
    """Decoder for a message of any direction (tools, docs, logs)."""
    return Decoder(Message, limits)


def _not_utf8(exc: UnicodeDecodeError) -> Error:
    return Error(
        code=ErrorCode.INVALID_JSON,
        message=f"not valid JSON: a string is not UTF-8 text (byte {exc.start})",
    )
