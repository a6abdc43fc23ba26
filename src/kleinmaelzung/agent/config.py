"""AgentConfig: the hub to talk to and the instruments to serve, from TOML.

Every error names the file, the key and what was expected, because the reader
stands next to the Pi, not the source.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from ..protocol import ID_REGEX, is_instrument_id
from ..transport import base_url
from .errors import ConfigError

if TYPE_CHECKING:
    from .drivers.base import DriverClass


class InstrumentConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One instrument: which driver, how often to read it, and the driver's own settings.

    The common keys are the same for every driver; `settings` (the
    `[instruments.settings]` table) is decoded by the driver with its own
    Struct (`drivers.decode_settings`). `port`, `profile`, `baudrate` and
    `reply_timeout_s` are the serial line driver's, kept at the top level so
    that existing configs keep working.
    """

    id: Annotated[str, msgspec.Meta(pattern=ID_REGEX)]
    driver: str = "serial_line"
    description: str = ""
    poll_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    #: The physical line or bus this instrument shares with others (an RS-485
    #: port with several Modbus slaves, an I2C bus): one worker serves a bus,
    #: one exchange at a time. Default: the port, else the instrument alone.
    bus: str | None = None
    settings: dict[str, Any] = {}
    port: str = ""
    profile: str = ""
    baudrate: Annotated[int, msgspec.Meta(gt=0)] | None = None
    reply_timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None

    @property
    def bus_name(self) -> str:
        """The bus this instrument's exchanges are serialised on."""
        return self.bus or self.port or f"instrument:{self.id}"


class SpoolConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[spool]` table: where samples wait for the hub, and how many may wait.

    Defaults: `$XDG_STATE_HOME/kleinmaelzung/spool-AGENT_ID.sqlite`; 5 million
    samples (about 70 hours of 20 instruments at 1 Hz, some 500 MB); a week.
    """

    path: str | None = None
    max_samples: Annotated[int, msgspec.Meta(gt=0)] = 5_000_000
    max_age_s: Annotated[float, msgspec.Meta(gt=0)] = 7 * 24 * 3600.0
    commit_interval_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5


class AgentConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole agent config."""

    hub: str
    agent_id: Annotated[str, msgspec.Meta(pattern=ID_REGEX)]
    instruments: list[InstrumentConfig]
    token: str | None = None
    spool: SpoolConfig = SpoolConfig()


#: What a user should write, by key, for messages that say "expected ...".
_HINTS = {
    "baudrate": "an integer such as 9600",
    "poll_interval_s": "a number of seconds greater than 0, such as 1.0",
    "reply_timeout_s": "a number of seconds greater than 0, such as 1.0",
    "id": "a lower-case id such as \"kiln-air\" (a-z, 0-9, '-', '_', '.')",
    "agent_id": "a lower-case id such as \"malthouse-pi-1\" (a-z, 0-9, '-', '_', '.')",
    "port": 'a device path such as "/dev/ttyUSB0"',
    "hub": 'a URL such as "http://hub.lab:8765"',
    "instruments": "a list of [[instruments]] tables",
    "max_samples": "a whole number of samples greater than 0, such as 5000000",
    "max_age_s": "a number of seconds greater than 0, such as 604800 (a week)",
    "commit_interval_s": "a number of seconds greater than 0 and at most 60, such as 0.5",
    "path": 'a file path such as "/var/lib/kleinmaelzung/spool.sqlite"',
}
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and check an agent config file; raise ConfigError saying what is wrong where."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the file: {exc.strerror or exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    return parse_config(raw, source=name)


def parse_config(raw: dict[str, Any], *, source: str = "agent config") -> AgentConfig:
    """Check a decoded config mapping; raise ConfigError naming `source` and the key."""
    try:
        config = msgspec.convert(raw, AgentConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(source, raw, str(exc))) from None
    check_config(config, source=source)
    return config


def check_config(
    config: AgentConfig,
    *,
    source: str = "agent config",
    drivers: Mapping[str, DriverClass] | None = None,
) -> None:
    """The checks beyond shape: hub URL, unique ids, known drivers, their settings."""
    from .drivers.discovery import find_driver

    try:
        base_url(config.hub)
    except ValueError as exc:
        raise ConfigError(f"{source}: hub: {exc}") from None
    if not config.instruments:
        raise ConfigError(f"{source}: instruments: at least one [[instruments]] table is needed")
    seen: dict[str, int] = {}
    for index, instrument in enumerate(config.instruments):
        where = f"{source}: instruments[{index}]"
        if not is_instrument_id(instrument.id):
            raise ConfigError(f"{where}.id: expected {_HINTS['id']}, got {instrument.id!r}")
        if instrument.id in seen:
            first = seen[instrument.id]
            raise ConfigError(
                f"{where}.id: {instrument.id!r} is already used by instruments[{first}]"
            )
        seen[instrument.id] = index
        try:
            driver = (drivers or {}).get(instrument.driver) or find_driver(instrument.driver)
        except KeyError as exc:
            raise ConfigError(f"{where}.driver: {exc.args[0]}") from None
        try:
            driver.check_config(instrument)
        except ValueError as exc:
            raise ConfigError(f"{where}.{_key_of(exc)}: {exc}") from None


def _key_of(exc: ValueError) -> str:
    key = getattr(exc, "key", None)
    return key if isinstance(key, str) else "profile"


def _explain(source: str, raw: dict[str, Any], message: str) -> str:
    match = _AT.match(message)
    assert match is not None  # the pattern matches any text
    what, path = match["what"], match["path"] or ""
    dotted = path.lstrip(".")
    key = re.sub(r"\[\d+\]", "", dotted.rsplit(".", 1)[-1]) if dotted else ""
    got = _value_at(raw, path)
    if what.startswith("Object contains unknown field"):
        field = what.split("`")[1] if "`" in what else "?"
        where = f"{dotted}.{field}" if dotted else field
        return f"{source}: {where}: unknown key (a typo?)"
    if what.startswith("Object missing required field"):
        field = what.split("`")[1] if "`" in what else "?"
        where = f"{dotted}.{field}" if dotted else field
        hint = _HINTS.get(field)
        return f"{source}: {where}: required key is missing" + (
            f"; expected {hint}" if hint else ""
        )
    hint = _HINTS.get(key)
    expected = f"expected {hint}" if hint else what[0].lower() + what[1:]
    shown = f", got {_show(got)}" if got is not _MISSING else ""
    return f"{source}: {dotted or '(top level)'}: {expected}{shown}"


_MISSING = object()


def _value_at(raw: Any, path: str) -> Any:
    value = raw
    for name, index in re.findall(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]", path):
        try:
            value = value[name] if name else value[int(index)]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return value


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)
