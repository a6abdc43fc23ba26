"""Serial line profiles: the TOML schema, its checks, and turning a line into channel values.

No I/O here: `serial_line.py` owns the port. A profile says how an
instrument is read, in one of two ways:

- `[poll]` (or several `[[poll]]` tables): the agent asks, the instrument
  answers one line per query; each answer's named groups are channels, and
  the answers of one poll make one reading;
- `[stream]`: the instrument sends a frame by itself (a balance in
  continuous mode, a hygrometer printing a line every 200 ms); each frame's
  named groups are channels.

Commands (`[[commands]]`) work either way; on a streaming instrument their
`reply` pattern tells their answer apart from the stream's frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from ...protocol import CommandArg, Value
from .declarations import builtin_names, load_declaration


class ChannelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One channel: a named group of a poll or stream pattern."""

    name: str
    unit: str = ""
    type: Literal["float", "bool", "str"] = "float"
    true_value: str = ""
    description: str = ""


class PollSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One query of a reading, and the pattern of its answer."""

    query: str
    pattern: str


class StreamSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An instrument that sends readings without being asked."""

    #: A regex a whole frame (one received line) must match; its named groups are channels.
    pattern: str
    #: Sent after open (and after the identify probe) to switch streaming on, e.g. "SIR".
    start: str = ""
    #: Sent before the port is closed to switch it off again, e.g. "@".
    stop: str = ""
    #: How long a read waits for the next frame: longer than the instrument's
    #: interval. Default: the profile's (or the config's) reply_timeout_s.
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None


class LineCommand(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One command: what to send and what answer means success."""

    name: str
    send: str
    #: A regex the answer must match; "" when the instrument answers nothing
    #: (an SCPI setting): then the profile's `error_query` is asked instead.
    expect: str
    description: str = ""
    args: list[CommandArg] = []
    timeout_s: float | None = None
    #: A physical act whose mistake can harm (heating, dosing, motion): the
    #: dashboard asks for confirmation before sending it.
    dangerous: bool = False
    #: On a streaming instrument: a regex for the lines that answer this
    #: command, good or bad (`'^T '` for an MT-SICS tare); other lines are
    #: stream frames. Default: a line matching `expect`, `error` or `errors`.
    reply: str = ""


#: Parity as pyserial names it: none, even, odd, mark, space.
Parity = Literal["N", "E", "O", "M", "S"]


class Profile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A line instrument, declared."""

    name: str
    kind: str
    channels: list[ChannelSpec]
    #: Asked for each reading: one query, or a list whose answers make one reading.
    poll: PollSpec | list[PollSpec] | None = None
    #: Or: the instrument streams, and each frame is a reading.
    stream: StreamSpec | None = None
    description: str = ""
    baudrate: int = 9600
    #: The frame, when it is not 8N1: many balances speak 7O1 or 7E1.
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Parity = "N"
    stopbits: float = 1  # 1, 1.5 or 2
    #: What the agent ends each line it sends with.
    line_ending: str = "\r\n"
    #: What ends a line the instrument sends: "\n" (a CR before it is
    #: dropped), or "\r" for instruments that end lines with a bare CR.
    receive_ending: str = "\n"
    reply_timeout_s: float = 1.0
    identify: str = ""
    #: A regex the answer to `identify` must match (searched, like visa's
    #: `identify.expect`), or "" to skip the check. Checked on every open, so a
    #: different instrument plugged into the same port is refused, not read.
    identity: str = ""
    error: str = ""
    errors: dict[str, str] = {}
    #: Asked after a command that has no answer (`expect = ""`), and after a
    #: query that got none, for the instrument's own error (SCPI: "SYST:ERR?").
    error_query: str = ""
    #: A regex an `error_query` answer matches when there is no error.
    no_error: str = r"^[+]?0\b"
    commands: list[LineCommand] = []

    @property
    def polls(self) -> list[PollSpec]:
        """The queries of one reading, in order; empty for a streaming profile."""
        if self.poll is None:
            return []
        return [self.poll] if isinstance(self.poll, PollSpec) else list(self.poll)


class LineSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[instruments.settings]` of a serial line instrument: where it is, and the frame."""

    #: "VID:PID" or "VID:PID:SERIAL" (hex, as `kmz ports` shows it): the USB
    #: adapter to use, found again on every open, wherever it is plugged in.
    usb: str = ""
    #: A regex the identify answer must match too: pins one instrument of a
    #: generic profile (an SCPI meter by its serial number).
    identity: str = ""
    bytesize: Literal[5, 6, 7, 8] | None = None
    parity: Parity | None = None
    stopbits: float | None = None  # 1, 1.5 or 2
    #: Handshake: "none", software ("xonxoff") or hardware ("rtscts", "dsrdtr").
    flow: Literal["none", "xonxoff", "rtscts", "dsrdtr"] = "none"


def builtin_profiles() -> list[str]:
    """Names of the profiles that ship with the agent."""
    return builtin_names("profiles")


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name, or a profile file by path; ValueError says what is wrong."""
    return load_declaration(name_or_path, "profiles", Profile, "profile", _check_profile)


def _check_profile(profile: Profile, source: str) -> None:
    if (profile.poll is None) == (profile.stream is None):
        raise ValueError(f"{source}: give either [poll] (ask for readings) or [stream], not both")
    if isinstance(profile.poll, list) and not profile.poll:
        raise ValueError(f"{source}: [[poll]] needs at least one query")
    if not profile.receive_ending:
        raise ValueError(f"{source}: receive_ending must not be empty")
    try:
        patterns = [re.compile(p.pattern) for p in profile.polls]
        if profile.stream is not None:
            patterns.append(re.compile(profile.stream.pattern))
        for command in profile.commands:
            re.compile(command.expect)
            re.compile(command.reply)
        for pattern in (profile.error, profile.identity, profile.no_error):
            re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{source}: bad regular expression: {exc}") from None
    names = [c.name for c in profile.channels]
    groups = [name for pattern in patterns for name in pattern.groupindex]
    where = "poll" if profile.stream is None else "stream"
    missing = set(names) - set(groups)
    if missing:
        raise ValueError(
            f"{source}: {where}.pattern has no named group for channel(s)"
            f" {', '.join(sorted(missing))}"
        )
    twice = sorted({n for n in names if groups.count(n) > 1})
    if twice:
        raise ValueError(f"{source}: channel(s) {', '.join(twice)} in more than one poll pattern")
    if profile.identity and not profile.identify:
        raise ValueError(f"{source}: identity needs identify, the query whose answer it checks")
    if profile.stream is not None:
        for command in profile.commands:
            if not command.expect:
                raise ValueError(
                    f"{source}: command {command.name!r}: on a streaming instrument a command"
                    " needs expect, the answer that tells it apart from the stream"
                )


@dataclass(frozen=True)
class Pattern:
    """A compiled pattern and the channels it yields."""

    regex: re.Pattern[str]
    channels: tuple[ChannelSpec, ...]

    def values(self, line: str) -> dict[str, Value] | None:
        """The channel values in `line`, or None if it is not such a line.

        ValueError if it matches but a float channel's text is no number (the
        pattern captures too much: a profile's mistake, named in the message).
        """
        match = self.regex.match(line)
        if match is None:
            return None
        values: dict[str, Value] = {}
        for channel in self.channels:
            text = match[channel.name]
            if text is None:
                return None  # an optional group left out: not a whole reading
            if channel.type == "float":
                try:
                    values[channel.name] = float(text)
                except ValueError as exc:
                    raise ValueError(f"channel {channel.name!r}: {exc}") from None
            elif channel.type == "bool":
                values[channel.name] = text == channel.true_value
            else:
                values[channel.name] = text
        return values


def compile_patterns(profile: Profile) -> list[tuple[str, Pattern]]:
    """(query, pattern) for each poll, or ("", pattern) for the stream's frames."""
    specs = [(p.query, p.pattern) for p in profile.polls]
    if profile.stream is not None:
        specs = [("", profile.stream.pattern)]
    compiled = []
    for query, text in specs:
        regex = re.compile(text)
        channels = tuple(c for c in profile.channels if c.name in regex.groupindex)
        compiled.append((query, Pattern(regex, channels)))
    return compiled
