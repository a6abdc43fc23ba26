"""Bytes to messages and back, within size limits.

Decoding never raises: bad input becomes an `Error` value whose code says what
kind of wrong it was and whose message says where (msgspec's JSON path).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

from .errors import ErrorCode
from .limits import Limits
from .messages import (
    ALL_MESSAGE_TYPES,
    AgentMessage,
    ClientMessage,
    Error,
    HubToAgentMessage,
    HubToClientMessage,
    Message,
    Sample,
)

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


def encode(message: msgspec.Struct) -> bytes:
    """Encode one message to JSON bytes."""
    return _encoder.encode(message)


def encode_samples(samples: Sequence[Sample]) -> bytes:
    """Encode samples as a JSON array, the body of a `data` message's `samples`."""
    return _encoder.encode(samples)


class Decoder(Generic[T]):
    """Decodes messages of one direction; anything else becomes an `Error`."""

    def __init__(self, union: Any, limits: Limits | None = None) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(union)
        self._limits = limits or Limits()
        self._allowed = {
            str(t.__struct_config__.tag) for t in ALL_MESSAGE_TYPES if _in_union(t, union)
        }

    def decode(self, data: bytes | str) -> T | Invalid:
        """Decode one frame; return the message or an `Error` describing the problem."""
        if len(data) > self._limits.max_message_bytes:
            return Invalid(
                Error(
                    code=ErrorCode.MESSAGE_TOO_LARGE,
                    message=f"message of {len(data)} bytes exceeds the limit of "
                    f"{self._limits.max_message_bytes} bytes",
                )
            )
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            return Invalid(self._explain(data, str(exc)))
        except msgspec.DecodeError as exc:
            return Invalid(Error(code=ErrorCode.INVALID_JSON, message=f"not valid JSON: {exc}"))

    def _explain(self, data: bytes | str, detail: str) -> Error:
        try:
            # msgspec validates while it parses, so a type error can be found
            # before a syntax error further on; check the syntax first.
            msgspec.json.decode(data)
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
        return Error(
            code=ErrorCode.INVALID_MESSAGE,
            message=f"invalid {probe.type!r} message: {detail}",
            id=request_id,
        )


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
    """Decoder for what the hub sends to an agent."""
    return Decoder(HubToAgentMessage, limits)


def hub_to_client_decoder(limits: Limits | None = None) -> Decoder[HubToClientMessage]:
    """Decoder for what the hub sends to a client."""
    return Decoder(HubToClientMessage, limits)


def any_decoder(limits: Limits | None = None) -> Decoder[Message]:
    """Decoder for a message of any direction (tools, docs, logs)."""
    return Decoder(Message, limits)
