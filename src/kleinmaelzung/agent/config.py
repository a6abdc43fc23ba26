"""AgentConfig: the hub to talk to and the instruments to serve, from TOML.

Every error names the file, the key and what was expected, because the reader
stands next to the Pi, not the source.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from ..configfile import ConfigFileError, convert, env_overrides, merged, read_toml
from ..protocol import ID_REGEX, is_instrument_id
from ..transport import Trust, TrustError, base_url, parse_pin
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

    #: The hub, or several hubs sharing a bus and a log: the agent connects to
    #: the first that answers and moves to the next when its hub fails.
    hub: str | list[str]
    agent_id: Annotated[str, msgspec.Meta(pattern=ID_REGEX)]
    instruments: list[InstrumentConfig]
    token: str | None = None
    #: A PEM file of the CA that signed an https:// hub's certificate (else
    #: the system's CAs), and optionally the certificate's SHA-256 (`transport.tls`).
    ca_file: str | None = None
    pin_sha256: str | None = None
    spool: SpoolConfig = SpoolConfig()
    #: Whether this agent runs instrument configurations an admin sends from
    #: the hub (`kmz agent-config set`), or only this file's ``[[instruments]]``.
    #: Accepting is the default: a lab adopts central management without a walk
    #: to every Pi, only admins can send one, and the agent checks it as it
    #: checks this file. A Pi whose file must be the only source says "refuse".
    remote_config: Literal["accept", "refuse"] = "accept"


class RemoteConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the hub may set: the ``[[instruments]]`` tables, nothing of the link or the spool."""

    instruments: list[InstrumentConfig]


#: What a user should write, by key, for messages that say "expected ...".
_HINTS = {
    "baudrate": "an integer such as 9600",
    "poll_interval_s": "a number of seconds greater than 0, such as 1.0",
    "reply_timeout_s": "a number of seconds greater than 0, such as 1.0",
    "id": "a lower-case id such as \"kiln-air\" (a-z, 0-9, '-', '_', '.')",
    "agent_id": "a lower-case id such as \"malthouse-pi-1\" (a-z, 0-9, '-', '_', '.')",
    "port": 'a device path such as "/dev/ttyUSB0"',
    "hub": 'a URL such as "http://hub.lab:8765", or a list of them',
    "instruments": "a list of [[instruments]] tables",
    "max_samples": "a whole number of samples greater than 0, such as 5000000",
    "max_age_s": "a number of seconds greater than 0, such as 604800 (a week)",
    "commit_interval_s": "a number of seconds greater than 0 and at most 60, such as 0.5",
    "path": 'a file path such as "/var/lib/kleinmaelzung/spool.sqlite"',
    "ca_file": 'a PEM file such as "/etc/kleinmaelzung/lab-ca.pem"',
    "pin_sha256": 'a SHA-256 fingerprint such as "AB:CD:...", 32 bytes in hex',
    "remote_config": '"accept" or "refuse"',
}


#: Environment variables that override the file: KMZ_AGENT_HUB, KMZ_AGENT_TOKEN,
#: KMZ_AGENT_SPOOL__PATH (a table's key after a double underscore).
ENV_PREFIX = "KMZ_AGENT_"


def load_config(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
) -> AgentConfig:
    """Read and check an agent config file, with `KMZ_AGENT_*` variables of `env` (default:
    the process's) on top; raise ConfigError saying what is wrong where."""
    try:
        raw = read_toml(path)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    from_env = env_overrides(ENV_PREFIX, os.environ if env is None else env, ("spool",))
    if from_env:
        names = ", ".join(sorted(f"{ENV_PREFIX}{k.upper()}" for k in from_env))
        return parse_config(merged(raw, from_env), source=f"{path} (with {names})")
    return parse_config(raw, source=str(path))


def parse_config(raw: dict[str, Any], *, source: str = "agent config") -> AgentConfig:
    """Check a decoded config mapping; raise ConfigError naming `source` and the key."""
    try:
        config = convert(raw, AgentConfig, source, _HINTS)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    check_config(config, source=source)
    return config


def parse_remote_config(
    text: str,
    base: AgentConfig,
    *,
    source: str = "hub",
    drivers: Mapping[str, DriverClass] | None = None,
) -> AgentConfig:
    """`base` with the ``[[instruments]]`` of a TOML text from the hub; ConfigError naming
    `source` and the key, as for a local file, if it is not one this agent can run."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    local = sorted(set(raw) & set(AgentConfig.__struct_fields__) - {"instruments"})
    if local:
        raise ConfigError(
            f"{source}: {local[0]}: set in the agent's own file only; "
            "a configuration from the hub holds [[instruments]] tables"
        )
    try:
        remote = convert(raw, RemoteConfig, source, _HINTS)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    config = msgspec.structs.replace(base, instruments=remote.instruments)
    check_instruments(config, source=source, drivers=drivers)
    return config


def hub_urls(config: AgentConfig) -> list[str]:
    """The hub URLs of a config, in the order the agent tries them."""
    return [config.hub] if isinstance(config.hub, str) else list(config.hub)


def check_config(
    config: AgentConfig,
    *,
    source: str = "agent config",
    drivers: Mapping[str, DriverClass] | None = None,
) -> None:
    """The checks beyond shape: hub URL, unique ids, known drivers, their settings."""
    if isinstance(config.hub, list) and not config.hub:
        raise ConfigError(
            f'{source}: hub: expected at least one URL, such as ["http://hub.lab:8765"]'
        )
    for index, url in enumerate(hub_urls(config)):
        key = "hub" if isinstance(config.hub, str) else f"hub[{index}]"
        try:
            base_url(url)
        except ValueError as exc:
            raise ConfigError(f"{source}: {key}: {exc}") from None
    for key, check in (
        ("ca_file", lambda: Trust.of(ca_file=config.ca_file)),
        ("pin_sha256", lambda: config.pin_sha256 and parse_pin(config.pin_sha256)),
    ):
        try:
            check()
        except TrustError as exc:
            raise ConfigError(f"{source}: {key}: {exc}") from None
    check_instruments(config, source=source, drivers=drivers)


def check_instruments(
    config: AgentConfig,
    *,
    source: str = "agent config",
    drivers: Mapping[str, DriverClass] | None = None,
) -> None:
    """Unique ids, known drivers, each driver's settings: a local file's and the hub's alike."""
    from .drivers.discovery import find_driver

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
