"""SCPI instruments through PyVISA (pyvisa-py by default): TCPIP, USB-TMC and serial resources.

The instrument is a declaration, an SCPI profile in TOML (see `scpi_profiles/`):
the identity query and the answer it must match, one query per channel, and
commands with a send template and, for those that answer, an expected-reply
regex. Commands that do not answer are followed by the profile's error query
(`SYST:ERR?`), so a refused value is an error, not a silent no-op.

PyVISA blocks, so every call runs in the instrument's bus thread, never on
the event loop.
"""

from __future__ import annotations

import contextlib
import re
from typing import Annotated, Any, Literal, NoReturn

import msgspec
import pyvisa
import pyvisa.constants
import pyvisa.errors
import pyvisa.rname
from pyvisa.resources import MessageBasedResource

from ...protocol import CommandArg, InstrumentInfo, Value
from ..config import InstrumentConfig
from ..errors import InstrumentError, NoAnswer, PortError
from .blocking import BlockingDriver
from .declarations import builtin_names, declared_info, load_declaration
from .settings import SettingsError, decode_settings

# --- the profile -------------------------------------------------------------


class Identify(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The identity probe: what to ask and what answer means "the right instrument"."""

    query: str = "*IDN?"
    expect: str = r"^[^,]+,[^,]+,[^,]*,[^,]*$"


class ScpiChannel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One channel: a query, and how its answer becomes a value."""

    name: str
    query: str
    unit: str = ""
    type: Literal["float", "int", "bool", "str"] = "float"
    #: A regex with a `value` group, for answers that carry more than the number.
    pattern: str = ""
    description: str = ""


class ScpiCommand(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One command: what to send and, if it answers, what the answer must look like."""

    name: str
    send: str
    description: str = ""
    args: list[CommandArg] = []
    #: A regex for the answer; empty: the command does not answer (most SCPI settings).
    expect: str = ""
    #: A physical act whose mistake can harm (heating, dosing, motion): the
    #: dashboard asks for confirmation before sending it.
    dangerous: bool = False


class ScpiProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An SCPI instrument, declared."""

    name: str
    kind: str
    channels: list[ScpiChannel]
    description: str = ""
    identify: Identify = Identify()
    read_termination: str = "\n"
    write_termination: str = "\n"
    timeout_s: float = 2.0
    #: Asked after each command that does not answer, and after a query that did
    #: not; an answer not matching `no_error` is the instrument's error.
    error_query: str = "SYST:ERR?"
    no_error: str = r"^[+]?0\b"
    #: An answer matching this is an error in place of a value (some instruments).
    error: str = ""
    commands: list[ScpiCommand] = []


def builtin_profiles() -> list[str]:
    """Names of the SCPI profiles that ship with the agent."""
    return builtin_names("scpi_profiles")


def load_profile(name_or_path: str) -> ScpiProfile:
    """A built-in SCPI profile by name, or a profile file by path; ValueError says what is wrong."""
    return load_declaration(
        name_or_path, "scpi_profiles", ScpiProfile, "SCPI profile", _check_profile
    )


def _check_profile(profile: ScpiProfile, source: str) -> None:
    try:
        for pattern in _patterns(profile):
            re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{source}: bad regular expression: {exc}") from None
    for channel in profile.channels:
        if channel.pattern and "value" not in re.compile(channel.pattern).groupindex:
            raise ValueError(f"{source}: channel {channel.name}: pattern needs a (?P<value>...)")


def _patterns(profile: ScpiProfile) -> list[str]:
    found = [profile.identify.expect, profile.no_error, profile.error]
    found += [c.pattern for c in profile.channels] + [c.expect for c in profile.commands]
    return [p for p in found if p]


# --- the settings ------------------------------------------------------------


class VisaSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[instruments.settings]` of a `driver = "visa"` instrument."""

    #: A VISA resource string: "TCPIP::10.0.0.5::INSTR", "USB0::0x2A8D::0x1301::MY123::INSTR",
    #: "ASRL/dev/ttyUSB0::INSTR".
    resource: str
    #: A built-in SCPI profile name, or the path of a .toml profile.
    profile: str
    #: "@py" (pyvisa-py), "@ivi" (a vendor VISA), "<definitions.yaml>@sim" (pyvisa-sim).
    backend: str = "@py"
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    read_termination: str | None = None
    write_termination: str | None = None
    #: Serial resources (ASRL) only; the instrument's own rate.
    baud_rate: Annotated[int, msgspec.Meta(gt=0)] | None = None
    #: A regex the identity answer must also match: pins one instrument by its serial number.
    identity: str = ""


def _settings(config: InstrumentConfig) -> VisaSettings:
    settings = decode_settings(config, VisaSettings)
    try:
        pyvisa.rname.parse_resource_name(settings.resource)
    except pyvisa.rname.InvalidResourceName as exc:
        raise SettingsError(
            "settings.resource",
            'expected a VISA resource string such as "TCPIP::10.0.0.5::INSTR", '
            f"got {settings.resource!r} ({exc})",
        ) from None
    if settings.baud_rate is not None and not settings.resource.upper().startswith("ASRL"):
        raise SettingsError(
            "settings.baud_rate",
            f"only serial (ASRL...) resources have a baud rate, not {settings.resource!r}",
        )
    try:
        load_profile(settings.profile)
    except ValueError as exc:
        raise SettingsError("settings.profile", str(exc)) from None
    if settings.identity:
        try:
            re.compile(settings.identity)
        except re.error as exc:
            raise SettingsError("settings.identity", f"bad regular expression: {exc}") from None
    return settings


# --- the driver --------------------------------------------------------------


class VisaDriver(BlockingDriver):
    """An SCPI instrument behind a VISA resource, driven by its profile."""

    def __init__(self, config: InstrumentConfig) -> None:
        super().__init__(config)
        self.settings = _settings(config)
        self.profile = load_profile(self.settings.profile)
        self._identity = [re.compile(self.profile.identify.expect)]
        if self.settings.identity:
            self._identity.append(re.compile(self.settings.identity))
        self._no_error = re.compile(self.profile.no_error)
        self._error = re.compile(self.profile.error) if self.profile.error else None
        self._channels = [
            (c, re.compile(c.pattern) if c.pattern else None) for c in self.profile.channels
        ]
        self._commands = {
            c.name: (c, re.compile(c.expect) if c.expect else None) for c in self.profile.commands
        }
        self._manager: pyvisa.ResourceManager | None = None
        self._resource: MessageBasedResource | None = None
        #: What the instrument answered to the identity query (`*IDN?`) when it
        #: was last opened; None before (`kmz agent --check` shows it).
        self.identity: str | None = None

    @staticmethod
    def check_config(config: InstrumentConfig) -> None:
        """Raise ValueError (with `.key`) if the settings or the profile are wrong."""
        _settings(config)

    def info(self) -> InstrumentInfo:
        """Channels and commands as declared by the profile."""
        return declared_info(self.config, self.profile)

    def open_blocking(self) -> None:
        """Open the resource and check that the expected instrument answers."""
        self.close_blocking()
        where = self.settings.resource
        timeout_ms = round((self.settings.timeout_s or self.profile.timeout_s) * 1000)
        options: dict[str, Any] = {
            "read_termination": _either(
                self.settings.read_termination, self.profile.read_termination
            ),
            "write_termination": _either(
                self.settings.write_termination, self.profile.write_termination
            ),
            "timeout": timeout_ms,
            "open_timeout": timeout_ms,
        }
        if self.settings.baud_rate is not None:
            options["baud_rate"] = self.settings.baud_rate
        try:
            self._manager = pyvisa.ResourceManager(self.settings.backend)
        except (OSError, ValueError) as exc:
            # A missing backend library or a bad pyvisa-sim file: nothing to reach.
            raise PortError(f"VISA backend {self.settings.backend!r}: {_first_line(exc)}") from None
        identified = False
        try:
            try:
                resource = self._manager.open_resource(where, **options)
            except (pyvisa.errors.Error, OSError, ValueError) as exc:
                raise PortError(f"cannot open {where}: {_first_line(exc)}") from None
            if not isinstance(resource, MessageBasedResource):
                raise PortError(f"{where} is not a message-based resource; SCPI needs one")
            self._resource = resource
            self.identity = self._identify()
            identified = True
        finally:
            if not identified:  # half open is not open: the next open starts clean
                self.close_blocking()

    def _identify(self) -> str:
        where, query = self.settings.resource, self.profile.identify.query
        try:
            answer = self._query(query)
        except NoAnswer as exc:
            raise PortError(f"{where}: no answer to the identity probe ({exc})") from None
        if not answer:
            raise PortError(f"{where}: nothing answered {query}")
        for pattern in self._identity:
            if pattern.search(answer) is None:
                raise PortError(
                    f"{where}: wrong instrument: {query} answered {answer!r},"
                    f" expected {pattern.pattern!r}"
                )
        return answer

    def close_blocking(self) -> None:
        """Close the resource and the resource manager; idempotent."""
        resource, manager = self._resource, self._manager
        self._resource = self._manager = None
        if resource is not None:
            # Already gone is fine: closing is all we wanted.
            with contextlib.suppress(pyvisa.errors.Error, OSError):
                resource.close()
        if manager is not None:
            with contextlib.suppress(pyvisa.errors.Error, OSError):
                manager.close()

    def read_blocking(self) -> dict[str, Value]:
        """Ask each channel's query and parse its answer."""
        values: dict[str, Value] = {}
        for channel, pattern in self._channels:
            answer = self._query(channel.query)
            text = answer
            if pattern is not None:
                match = pattern.search(answer)
                if match is None:
                    self._raise_unexpected(channel.query, answer)
                text = match["value"]
            values[channel.name] = self._convert(channel, text, answer)
        return values

    def execute_blocking(self, name: str, args: dict[str, Any]) -> Any:
        """Send a command; the result is the answer's named groups (or the arguments)."""
        command, expect = self._commands[name]
        try:
            line = command.send.format(**args)
        except (KeyError, ValueError, IndexError) as exc:
            raise InstrumentError(f"cannot format {command.send!r} with {args}: {exc}") from None
        if expect is None:
            self._write(line)
            self._check_errors(line)
            return dict(args)
        answer = self._query(line)
        match = expect.search(answer)
        if match is None:
            self._raise_unexpected(line, answer)
        result = {k: _number(v) for k, v in match.groupdict().items() if v is not None}
        return result or {"answer": answer}

    # --- exchanges -------------------------------------------------------------

    def _query(self, line: str) -> str:
        resource = self._open_resource()
        try:
            answer = resource.query(line).strip()
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                # An SCPI instrument that does not know a query queues an error
                # and stays silent: say which error, if it has one.
                self._check_errors(line)
                raise NoAnswer(f"no answer to {line!r} from {self.settings.resource}") from None
            raise PortError(f"{self.settings.resource}: {_first_line(exc)}") from None
        except (pyvisa.errors.Error, OSError) as exc:
            raise PortError(f"{self.settings.resource}: {_first_line(exc)}") from None
        except UnicodeDecodeError:
            raise InstrumentError(f"answer to {line!r} is not text") from None
        if self._error is not None and self._error.search(answer):
            raise InstrumentError(f"{line!r}: instrument answered {answer!r}")
        return answer

    def _write(self, line: str) -> None:
        resource = self._open_resource()
        try:
            resource.write(line)
        except (pyvisa.errors.Error, OSError) as exc:
            raise PortError(f"{self.settings.resource}: {_first_line(exc)}") from None

    def _check_errors(self, after: str) -> None:
        """Raise InstrumentError with the instrument's own message if its error queue holds one."""
        if not self.profile.error_query:
            return
        resource = self._open_resource()
        try:
            answer = resource.query(self.profile.error_query).strip()
        except (pyvisa.errors.Error, OSError, UnicodeDecodeError):
            return  # the caller reports its own failure; this was only for a better message
        if not self._no_error.search(answer):
            raise InstrumentError(f"{after!r}: instrument reported {answer}")

    def _open_resource(self) -> MessageBasedResource:
        if self._resource is None:
            raise PortError(f"{self.settings.resource} is not open")
        return self._resource

    def _convert(self, channel: ScpiChannel, text: str, answer: str) -> Value:
        try:
            if channel.type == "float":
                return float(text)
            if channel.type == "int":
                return int(float(text))
            if channel.type == "bool":
                return text.strip().upper() in {"1", "ON", "TRUE"}
        except ValueError:
            self._raise_unexpected(channel.query, answer)
        return text

    def _raise_unexpected(self, line: str, answer: str) -> NoReturn:
        self._check_errors(line)
        raise InstrumentError(f"unexpected answer to {line!r}: {answer!r}")


def _either(setting: str | None, default: str) -> str:
    return default if setting is None else setting


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # pyvisa-sim puts the repr of a whole traceback into its message: keep its
    # first words and the traceback's last line, which says what was wrong.
    head, traceback = text.split(" 'Traceback", 1) if " 'Traceback" in text else (text, "")
    lines = [line for line in traceback.split("\\n") if line.strip(" '")]
    cause = f" ({lines[-1].strip()})".replace("\\'", "'") if lines else ""
    return head.splitlines()[0] + cause
