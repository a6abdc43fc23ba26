"""A generic driver for instruments that speak a line protocol on a serial port.

The instrument's I/O is a declaration, a profile in TOML (see `profiles/`):
serial settings, a poll query with a regex whose named groups are channels,
and commands with a send template and an expected-reply regex.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import termios
from typing import Any, Literal, NoReturn

import msgspec
import serial
import serial_asyncio_fast

from ...protocol import Channel, CommandArg, CommandSpec, InstrumentInfo, Value
from ..config import InstrumentConfig
from ..errors import InstrumentError, NoAnswer, PortError
from .declarations import builtin_names, load_declaration
from .settings import decode_settings

_MAX_LINE = 4096


class ChannelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One channel: a named group of the poll pattern."""

    name: str
    unit: str = ""
    type: Literal["float", "bool", "str"] = "float"
    true_value: str = ""
    description: str = ""


class PollSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How to take a reading."""

    query: str
    pattern: str


class LineCommand(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One command: what to send and what answer means success."""

    name: str
    send: str
    expect: str
    description: str = ""
    args: list[CommandArg] = []
    timeout_s: float | None = None


#: Parity as pyserial names it: none, even, odd, mark, space.
Parity = Literal["N", "E", "O", "M", "S"]


class Profile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A line instrument, declared."""

    name: str
    kind: str
    poll: PollSpec
    channels: list[ChannelSpec]
    description: str = ""
    baudrate: int = 9600
    #: The frame, when it is not 8N1: many balances speak 7O1 or 7E1.
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Parity = "N"
    stopbits: float = 1  # 1, 1.5 or 2
    line_ending: str = "\r\n"
    reply_timeout_s: float = 1.0
    identify: str = ""
    #: A regex the answer to `identify` must match (searched, like visa's
    #: `identify.expect`), or "" to skip the check. Checked on every open, so a
    #: different instrument plugged into the same port is refused, not read.
    identity: str = ""
    error: str = ""
    errors: dict[str, str] = {}
    commands: list[LineCommand] = []


class LineSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[instruments.settings]` of a serial line instrument: the frame, when not the profile's."""

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
    try:
        poll = re.compile(profile.poll.pattern)
        for command in profile.commands:
            re.compile(command.expect)
        if profile.error:
            re.compile(profile.error)
        if profile.identity:
            re.compile(profile.identity)
    except re.error as exc:
        raise ValueError(f"{source}: bad regular expression: {exc}") from None
    missing = {c.name for c in profile.channels} - set(poll.groupindex)
    if missing:
        raise ValueError(
            f"{source}: poll.pattern has no named group for channel(s) {', '.join(sorted(missing))}"
        )
    if profile.identity and not profile.identify:
        raise ValueError(f"{source}: identity needs identify, the query whose answer it checks")


class _Lines(asyncio.Protocol):
    """Collects lines from the serial transport; remembers when the port is lost."""

    def __init__(self) -> None:
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.lost: BaseException | None = None
        self.closed = asyncio.Event()
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            raw, _, rest = self._buffer.partition(b"\n")
            self._buffer = bytearray(rest)
            self.lines.put_nowait(raw.decode("ascii", errors="replace").strip("\r\0 "))
        if len(self._buffer) > _MAX_LINE:
            self._buffer.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("port closed")
        self.closed.set()

    def flush(self) -> None:
        """Forget stale input: late answers and line noise from before this exchange."""
        self._buffer.clear()
        while not self.lines.empty():
            self.lines.get_nowait()


class SerialLineDriver:
    """A line-protocol instrument on a serial port, driven by its profile."""

    def __init__(self, config: InstrumentConfig) -> None:
        self.config = config
        self.profile = load_profile(config.profile)
        self._poll = re.compile(self.profile.poll.pattern)
        self._error = re.compile(self.profile.error) if self.profile.error else None
        self._identity = re.compile(self.profile.identity) if self.profile.identity else None
        self._commands = {c.name: (c, re.compile(c.expect)) for c in self.profile.commands}
        self._transport: asyncio.BaseTransport | None = None
        self._lines: _Lines | None = None
        self._timeout = config.reply_timeout_s or self.profile.reply_timeout_s
        self.settings = decode_settings(config, LineSettings)

    @staticmethod
    def check_config(config: InstrumentConfig) -> None:
        """Raise ValueError if the port or profile is missing or broken."""
        if not config.port:
            raise _KeyedError("port", 'the serial_line driver needs a port such as "/dev/ttyUSB0"')
        if not config.profile:
            raise ValueError(
                f"the serial_line driver needs a profile; built in: {', '.join(builtin_profiles())}"
            )
        profile = load_profile(config.profile)
        settings = decode_settings(config, LineSettings)
        if settings.stopbits not in (None, 1, 1.5, 2):
            raise _KeyedError(
                "settings.stopbits", f"expected 1, 1.5 or 2, got {settings.stopbits!r}"
            )
        if profile.stopbits not in (1, 1.5, 2):
            raise ValueError(f"profile {config.profile!r}: stopbits must be 1, 1.5 or 2")

    def info(self) -> InstrumentInfo:
        """Channels and commands as declared by the profile."""
        return InstrumentInfo(
            id=self.config.id,
            kind=self.profile.kind,
            description=self.config.description or self.profile.description,
            channels=[
                Channel(name=c.name, unit=c.unit, description=c.description)
                for c in self.profile.channels
            ],
            commands=[
                CommandSpec(name=c.name, description=c.description, args=c.args)
                for c in self.profile.commands
            ],
            poll_interval_s=self.config.poll_interval_s,
        )

    async def open(self) -> None:
        """Open the serial port and check that the expected instrument answers on it."""
        await self.close()
        loop = asyncio.get_running_loop()
        try:
            transport, lines = await serial_asyncio_fast.create_serial_connection(
                loop,
                _Lines,
                self.config.port,
                baudrate=self.config.baudrate or self.profile.baudrate,
                bytesize=self.settings.bytesize or self.profile.bytesize,
                parity=self.settings.parity or self.profile.parity,
                stopbits=self.settings.stopbits or self.profile.stopbits,
                xonxoff=self.settings.flow == "xonxoff",
                rtscts=self.settings.flow == "rtscts",
                dsrdtr=self.settings.flow == "dsrdtr",
            )
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            # termios.error: the device refuses the frame (a pty and 7-bit
            # parity, say); it is no OSError, and must not escape as a bug.
            raise PortError(f"cannot open {self.config.port}: {_reason(exc)}") from None
        assert isinstance(lines, _Lines)
        self._transport, self._lines = transport, lines
        try:
            await self._identify()
        except BaseException:
            await self.close()  # half open is not open: the next open starts clean
            raise

    async def _identify(self) -> None:
        # A port path names a socket, not an instrument: after a replug
        # (or a swapped cable) something else may answer there, and its
        # readings must not be delivered under this instrument's id.
        if self._identity is None:
            return
        query, port = self.profile.identify, self.config.port
        try:
            answer = await self._exchange(query, self._timeout)
        except NoAnswer:
            raise PortError(
                f"{port}: the instrument did not answer the identify query {query!r}"
                f" within {self._timeout:g} s"
            ) from None
        if self._identity.search(answer) is None:
            raise PortError(
                f"{port}: wrong instrument: {query} answered {answer!r},"
                f" expected {self._identity.pattern!r}"
            )

    async def close(self) -> None:
        """Close the serial port; idempotent."""
        transport, lines = self._transport, self._lines
        self._transport = self._lines = None
        if transport is not None and lines is not None:
            transport.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(lines.closed.wait(), 1.0)

    async def read(self) -> dict[str, Value]:
        """Send the poll query and parse the answer into channel values."""
        answer = await self._exchange(self.profile.poll.query, self._timeout)
        match = self._poll.match(answer)
        if match is None:
            self._raise_instrument_error(
                answer, f"unexpected answer to {self.profile.poll.query!r}"
            )
        values: dict[str, Value] = {}
        for channel in self.profile.channels:
            text = match[channel.name]
            if channel.type == "float":
                values[channel.name] = float(text)
            elif channel.type == "bool":
                values[channel.name] = text == channel.true_value
            else:
                values[channel.name] = text
        return values

    async def execute(self, name: str, args: dict[str, Any]) -> Any:
        """Send a command and check its answer; the result is the answer's named groups."""
        command, expect = self._commands[name]
        try:
            line = command.send.format(**args)
        except (KeyError, ValueError, IndexError) as exc:
            raise InstrumentError(f"cannot format {command.send!r} with {args}: {exc}") from None
        answer = await self._exchange(line, command.timeout_s or self._timeout)
        match = expect.match(answer)
        if match is None:
            self._raise_instrument_error(answer, f"unexpected answer to {line!r}")
        result = {k: _number(v) for k, v in match.groupdict().items() if v is not None}
        return result or dict(args)

    def _raise_instrument_error(self, answer: str, fallback: str) -> NoReturn:
        known = self.profile.errors.get(answer)
        if known is not None:
            raise InstrumentError(f"{known} (instrument answered {answer!r})")
        if self._error is not None and self._error.match(answer):
            raise InstrumentError(f"instrument answered {answer!r}")
        raise InstrumentError(f"{fallback}: {answer!r}")

    async def _exchange(self, line: str, timeout_s: float) -> str:
        transport, lines = self._transport, self._lines
        if transport is None or lines is None or transport.is_closing():
            raise PortError(f"{self.config.port} is not open")
        if lines.lost is not None:
            raise PortError(f"{self.config.port} was lost: {_reason(lines.lost)}")
        lines.flush()
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write((line + self.profile.line_ending).encode("ascii"))
        get = asyncio.ensure_future(lines.lines.get())
        closed = asyncio.ensure_future(lines.closed.wait())
        try:
            done, _ = await asyncio.wait(
                {get, closed}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (get, closed):
                task.cancel()
        if get in done:
            return get.result()
        if closed in done:
            raise PortError(f"{self.config.port} was lost: {_reason(lines.lost)}")
        raise NoAnswer(f"no answer to {line!r} within {timeout_s:g} s")


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _KeyedError(ValueError):
    """A config error about one key (the loader names it)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
