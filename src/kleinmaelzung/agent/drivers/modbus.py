"""A driver for Modbus TCP and Modbus RTU instruments, through pymodbus's asyncio clients.

The instrument is a declaration, a register map: which registers (holding,
input, coil, discrete) are which channels, their data type, word order, scale,
offset and unit; and which writable registers are commands. The map is given
inline in `[instruments.settings]` or named with `map = "kmz-kiln-modbus"`
(a shipped file in `modbus_maps/`, or the path of a `.toml` file).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
from pymodbus import ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from ...protocol import NAME_REGEX, Channel, CommandArg, CommandSpec, InstrumentInfo, Value
from ..config import InstrumentConfig
from ..errors import InstrumentError, NoAnswer, PortError
from .declarations import builtin_names, load_declaration
from .settings import SettingsError, decode_settings

RegisterKind = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["int16", "uint16", "int32", "uint32", "float32"]
WordOrder = Literal["big", "little"]
Address = Annotated[int, msgspec.Meta(ge=0, le=65535)]
#: Channel and command names as the hub takes them (checked here, not at the hub).
Name = Annotated[str, msgspec.Meta(pattern=NAME_REGEX)]

#: Registers per data type; coils and discrete inputs are one bit each.
_WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
#: The Modbus limits for one read request (registers, bits).
_MAX_REGISTERS, _MAX_BITS = 125, 2000
_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class _Struct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings are strict: a typo is an error, not a default silently taken."""


class RegisterChannel(_Struct, frozen=True):
    """One channel: a value read from one register (or two, for 32-bit types)."""

    channel: Name
    address: Address
    kind: RegisterKind = "holding"
    type: DataType = "uint16"
    word_order: WordOrder = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""


class RegisterCommand(_Struct, frozen=True):
    """One command: write `value` to a holding register (as (value - offset) / scale) or coil."""

    name: Name
    address: Address
    kind: Literal["holding", "coil"] = "holding"
    type: DataType = "uint16"
    word_order: WordOrder = "big"
    scale: float = 1.0
    offset: float = 0.0
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""
    description: str = ""
    #: A physical act whose mistake can harm (heating, dosing, motion): the
    #: dashboard asks for confirmation before sending it.
    dangerous: bool = False


class RegisterMap(_Struct, frozen=True):
    """A shipped or user register map file."""

    kind: str = "modbus"
    description: str = ""
    registers: list[RegisterChannel] = []
    commands: list[RegisterCommand] = []


class ModbusSettings(_Struct, frozen=True):
    """The `[instruments.settings]` of a Modbus instrument."""

    transport: Literal["tcp", "rtu"] = "tcp"
    host: str = ""
    port: Annotated[int, msgspec.Meta(gt=0, le=65535)] = 502
    serial_port: str = ""
    baudrate: Annotated[int, msgspec.Meta(gt=0)] = 19200
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit: Annotated[int, msgspec.Meta(ge=0, le=247)] = 1
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    map: str = ""
    kind: str = ""
    registers: list[RegisterChannel] = []
    commands: list[RegisterCommand] = []


def builtin_maps() -> list[str]:
    """Names of the register maps that ship with the agent."""
    return builtin_names("modbus_maps")


def load_map(name_or_path: str) -> RegisterMap:
    """A built-in register map by name, or a map file by path; SettingsError says what is wrong."""
    try:
        return load_declaration(name_or_path, "modbus_maps", RegisterMap, "register map")
    except ValueError as exc:
        raise SettingsError("settings.map", str(exc)) from None


class _Plan(msgspec.Struct, frozen=True):
    """Everything the driver needs from its settings, checked once."""

    settings: ModbusSettings
    kind: str
    description: str
    registers: list[RegisterChannel]
    commands: dict[str, RegisterCommand]


def _plan(config: InstrumentConfig) -> _Plan:
    # The serial line driver's top-level keys would be ignored here, silently.
    for key, value in (
        ("port", config.port),
        ("profile", config.profile),
        ("baudrate", config.baudrate),
        ("reply_timeout_s", config.reply_timeout_s),
    ):
        if value:
            where = {"port": "serial_port (RTU) or host and port (TCP)", "profile": "map"}
            raise SettingsError(
                key,
                f"the modbus driver takes no {key} here; write it in [instruments.settings]"
                f" as {where.get(key, key.replace('reply_', ''))}",
            )
    settings = decode_settings(config, ModbusSettings)
    if settings.transport == "tcp" and not settings.host:
        raise SettingsError(
            "settings.host", 'Modbus TCP needs a host, such as "192.168.1.50" or "127.0.0.1"'
        )
    if settings.transport == "rtu" and not settings.serial_port:
        raise SettingsError(
            "settings.serial_port", 'Modbus RTU needs a serial port, such as "/dev/ttyUSB0"'
        )
    shipped = load_map(settings.map) if settings.map else RegisterMap()
    registers = [*shipped.registers, *settings.registers]
    if not registers:
        raise SettingsError(
            "settings.registers",
            "no registers: list [[instruments.settings.registers]] or name a map",
        )
    # Keys name the entry where the user wrote it: the inline list's own index,
    # or the map (its file is the user's to fix, or ours if shipped).
    mapped_by = {r.channel: settings.map for r in shipped.registers}
    for index, register in enumerate(shipped.registers):
        _check_scale(register.scale, "settings.map", f"{settings.map}: registers[{index}].scale")
    for index, register in enumerate(settings.registers):
        key = f"settings.registers[{index}]"
        if register.channel in mapped_by:
            source = mapped_by[register.channel]
            raise SettingsError(
                f"{key}.channel",
                f"channel {register.channel!r} is already mapped by {source or 'an entry above'}",
            )
        mapped_by[register.channel] = ""
        _check_scale(register.scale, f"{key}.scale")
    names: dict[str, RegisterCommand] = {}
    for index, command in enumerate(shipped.commands):
        _check_scale(command.scale, "settings.map", f"{settings.map}: commands[{index}].scale")
        names[command.name] = command
    for index, command in enumerate(settings.commands):
        key = f"settings.commands[{index}]"
        if command.name in names:
            raise SettingsError(f"{key}.name", f"command {command.name!r} is declared twice")
        _check_scale(command.scale, f"{key}.scale")
        names[command.name] = command
    return _Plan(
        settings=settings,
        kind=settings.kind or shipped.kind,
        description=config.description or shipped.description,
        registers=registers,
        commands=names,
    )


def _scaled(raw: int | float, register: RegisterChannel | RegisterCommand, name: str) -> Value:
    """A register's number as the device means it; InstrumentError if it is not finite."""
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise InstrumentError(
                f"{name}: register {register.address} holds {raw} (a sensor fault?)"
            )
        raw = float(f"{raw:.7g}")  # float32 carries 7 significant digits; the rest is noise
    if register.scale == 1 and register.offset == 0:
        return raw
    # Rounding takes off the binary noise of the scale (233 x 0.1 = 23.300000000000001).
    return float(f"{raw * register.scale + register.offset:.12g}")


def _check_scale(scale: float, key: str, where: str = "") -> None:
    if scale == 0 or not math.isfinite(scale):
        prefix = f"{where}: " if where else ""
        raise SettingsError(key, f"{prefix}expected a finite number other than 0, got {scale:g}")


class _Block(msgspec.Struct, frozen=True):
    """One read request: contiguous registers of one kind, and the channels in it."""

    kind: RegisterKind
    address: int
    count: int
    channels: list[RegisterChannel]


def _width(register: RegisterChannel) -> int:
    return 1 if register.kind in ("coil", "discrete") else _WIDTH[register.type]


def _blocks(registers: Sequence[RegisterChannel]) -> list[_Block]:
    """Contiguous registers of one kind are read in one request, within Modbus limits."""
    # Only truly contiguous ones: a gap may hold an address the device refuses.
    blocks: list[_Block] = []
    ordered = sorted(registers, key=lambda r: (r.kind, r.address))
    for register in ordered:
        width = _width(register)
        limit = _MAX_BITS if register.kind in ("coil", "discrete") else _MAX_REGISTERS
        last = blocks[-1] if blocks else None
        if (
            last is not None
            and last.kind == register.kind
            and last.address + last.count == register.address
            and last.count + width <= limit
        ):
            blocks[-1] = _Block(
                kind=last.kind,
                address=last.address,
                count=last.count + width,
                channels=[*last.channels, register],
            )
        else:
            blocks.append(
                _Block(
                    kind=register.kind, address=register.address, count=width, channels=[register]
                )
            )
    return blocks


def decode_value(registers: Sequence[int], type: DataType, word_order: WordOrder) -> int | float:
    """The number in one or two 16-bit registers."""
    data_type = getattr(AsyncModbusTcpClient.DATATYPE, type.upper())
    value = AsyncModbusTcpClient.convert_from_registers(
        list(registers), data_type, word_order=word_order
    )
    assert isinstance(value, int | float)  # one value of a numeric type
    return value


def encode_value(value: float, type: DataType, word_order: WordOrder) -> list[int]:
    """One or two 16-bit registers holding `value`; ValueError if it does not fit `type`."""
    data_type = getattr(AsyncModbusTcpClient.DATATYPE, type.upper())
    number: int | float = value if type == "float32" else round(value)
    if type != "float32":
        bits = 16 if type.endswith("16") else 32
        low, high = (
            (0, 2**bits - 1) if type.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        )
        if not low <= number <= high:
            raise ValueError(f"{value:g} does not fit {type} ({low}..{high})")
    return AsyncModbusTcpClient.convert_to_registers(number, data_type, word_order=word_order)


class _Line:
    """One connection (a TCP socket, or a serial port) and its client, shared by its units."""

    def __init__(
        self, key: str, client: AsyncModbusTcpClient | AsyncModbusSerialClient, settings: str
    ) -> None:
        self.key = key
        self.client = client
        self.settings = settings
        self.users = 0


#: Open lines by event loop, then by port or host:port. A serial port opens
#: once (pyserial locks it) and a TCP gateway in front of an RS-485 line
#: takes few connections, so the units on one line share one client, which
#: sends one request at a time. It holds open connections, not configuration;
#: by loop, because a client belongs to the loop that opened it.
_LINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Line]] = (
    weakref.WeakKeyDictionary()
)


class ModbusDriver:
    """A Modbus TCP or RTU instrument (one unit id), driven by its register map."""

    #: What the instrument said it is: nothing. A register map names no register
    #: that identifies a device, and Read Device Identification (function 43)
    #: is optional, which small controllers often leave out or do not answer
    #: at all; asking on every open would cost them a timeout each time.
    identity: str | None = None

    def __init__(self, config: InstrumentConfig) -> None:
        self.config = config
        self._plan = _plan(config)
        self.settings = self._plan.settings
        self._blocks = _blocks(self._plan.registers)
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._line: _Line | None = None
        self._where = (
            f"{self.settings.host}:{self.settings.port}"
            if self.settings.transport == "tcp"
            else self.settings.serial_port
        )

    @staticmethod
    def check_config(config: InstrumentConfig) -> None:
        """Raise SettingsError (a ValueError naming the key) if the settings cannot work."""
        _plan(config)

    def info(self) -> InstrumentInfo:
        """Channels and commands as declared by the register map."""
        return InstrumentInfo(
            id=self.config.id,
            kind=self._plan.kind,
            description=self._plan.description,
            channels=[
                Channel(name=r.channel, unit=r.unit, description=r.description)
                for r in self._plan.registers
            ],
            commands=[
                CommandSpec(
                    name=c.name,
                    description=c.description,
                    dangerous=c.dangerous,
                    args=[
                        CommandArg(
                            name="value",
                            type="bool" if c.kind == "coil" else "float",
                            description=f"in {c.unit}" if c.unit else "",
                            minimum=c.minimum,
                            maximum=c.maximum,
                        )
                    ],
                )
                for c in self._plan.commands.values()
            ],
            poll_interval_s=self.config.poll_interval_s,
        )

    async def open(self) -> None:
        """Connect to the device (TCP) or open the serial line (RTU), shared by its units."""
        await self.close()
        lines = _LINES.setdefault(asyncio.get_running_loop(), {})
        line = lines.get(self._where)
        wanted = self._line_settings()
        if line is None:
            line = lines[self._where] = _Line(self._where, self._new_client(), wanted)
        elif line.settings != wanted:
            raise PortError(
                f"{self._where} is already open at {line.settings};"
                f" unit {self.settings.unit} asks for {wanted}"
            )
        line.users += 1
        try:
            if not line.client.connected:
                await self._connect(line.client)
        except PortError:
            self._release(line)
            raise
        self._client, self._line = line.client, line

    def _line_settings(self) -> str:
        s = self.settings
        if s.transport == "tcp":
            return "Modbus TCP"
        return f"{s.baudrate} baud {s.bytesize}{s.parity}{s.stopbits}"

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        # retries=0 and no reconnect: the runner owns retrying and reopening,
        # with its own backoff, and must learn at once that the line is gone.
        # The first unit's timeout_s serves its line.
        s = self.settings
        if s.transport == "tcp":
            return AsyncModbusTcpClient(
                s.host, port=s.port, timeout=s.timeout_s, retries=0, reconnect_delay=0
            )
        return AsyncModbusSerialClient(
            s.serial_port,
            baudrate=s.baudrate,
            parity=s.parity,
            stopbits=s.stopbits,
            bytesize=s.bytesize,
            timeout=s.timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    async def _connect(self, client: AsyncModbusTcpClient | AsyncModbusSerialClient) -> None:
        try:
            connected = await client.connect()
        except (OSError, ModbusException) as exc:
            client.close()
            raise PortError(f"cannot open {self._where}: {exc}") from None
        if not connected:
            client.close()
            raise PortError(f"cannot open {self._where}: connection refused or port missing")

    async def close(self) -> None:
        """Let go of the line (closed once its last unit lets go); idempotent."""
        line, self._line, self._client = self._line, None, None
        if line is not None:
            self._release(line)

    def _release(self, line: _Line) -> None:
        line.users -= 1
        if line.users <= 0:
            line.client.close()
            lines = _LINES.get(asyncio.get_running_loop(), {})
            if lines.get(line.key) is line:
                del lines[line.key]

    async def read(self) -> dict[str, Value]:
        """Read every mapped register, decode, scale and offset them."""
        values: dict[str, Value] = {}
        for block in self._blocks:
            if block.kind in ("coil", "discrete"):
                bits = await self._read_bits(block.kind, block.address, block.count)
                for register in block.channels:
                    values[register.channel] = bits[register.address - block.address]
                continue
            words = await self._read_words(block.kind, block.address, block.count)
            for register in block.channels:
                start = register.address - block.address
                raw = decode_value(
                    words[start : start + _width(register)], register.type, register.word_order
                )
                values[register.channel] = _scaled(raw, register, register.channel)
        return values

    async def execute(self, name: str, args: dict[str, Any]) -> Any:
        """Write the command's register, read it back; the result is `{"value": <read back>}`."""
        command = self._plan.commands[name]
        value = args["value"]
        if command.kind == "coil":
            await self._call(
                "write_coil", command.address, bool(value), what=f"writing coil {command.address}"
            )
            bits = await self._read_bits("coil", command.address, 1)
            return {"value": bits[0]}
        try:
            words = encode_value(
                (float(value) - command.offset) / command.scale, command.type, command.word_order
            )
        except ValueError as exc:
            raise InstrumentError(f"{name}: {exc}") from None
        # Function 6 for one register: many small controllers know no other;
        # 16 only for values that span two registers.
        what = f"writing register {command.address}"
        if len(words) == 1:
            await self._call("write_register", command.address, words[0], what=what)
        else:
            await self._call("write_registers", command.address, words, what=what)
        back = await self._read_words("holding", command.address, len(words))
        raw = decode_value(back, command.type, command.word_order)
        return {"value": _scaled(raw, command, name)}

    async def _read_words(self, kind: RegisterKind, address: int, count: int) -> list[int]:
        method = "read_holding_registers" if kind == "holding" else "read_input_registers"
        response = await self._call(
            method, address, count=count, what=f"reading {kind} registers {address}+{count}"
        )
        words = list(response.registers)
        if len(words) < count:
            raise InstrumentError(
                f"asked for {count} {kind} registers at {address}, got {len(words)}"
            )
        return words

    async def _read_bits(self, kind: RegisterKind, address: int, count: int) -> list[bool]:
        method = "read_coils" if kind == "coil" else "read_discrete_inputs"
        response = await self._call(
            method, address, count=count, what=f"reading {kind}s {address}+{count}"
        )
        bits = list(response.bits)
        if len(bits) < count:
            raise InstrumentError(f"asked for {count} {kind}s at {address}, got {len(bits)}")
        return bits[:count]

    async def _call(self, method: str, *args: Any, what: str, **kwargs: Any) -> ModbusPDU:
        """One request; pymodbus's errors and exception responses mapped to ours."""
        client = self._client
        if client is None or not client.connected:
            raise PortError(f"{self._where} is not open")
        unit = self.settings.unit
        try:
            response = await getattr(client, method)(*args, device_id=unit, **kwargs)
        except ConnectionException as exc:
            raise PortError(f"{self._where} was lost: {exc}") from None
        except (TimeoutError, ModbusIOException) as exc:
            # A closed connection also ends a pending request; tell it from silence.
            if not client.connected:
                raise PortError(f"{self._where} was lost: {exc}") from None
            raise NoAnswer(
                f"unit {unit} at {self._where}: no answer {what}"
                f" within {self.settings.timeout_s:g} s"
            ) from None
        except ModbusException as exc:
            raise InstrumentError(f"unit {unit} at {self._where}: {what}: {exc}") from None
        assert isinstance(response, ModbusPDU)
        if response.isError():
            code = getattr(response, "exception_code", 0)
            name = _EXCEPTION_NAMES.get(code, "unknown exception")
            raise InstrumentError(
                f"unit {unit} at {self._where} answered {what}"
                f" with Modbus exception {code} ({name})"
            )
        return response
