"""I2C sensor maps: what a sensor is asked and answers, declared in TOML (see `i2c_maps/`).

A map holds what a datasheet tabulates: the addresses, how to tell the
sensor is there (a chip id, or any answer with good CRCs), the bytes that
start a measurement and how long it takes, the CRC rule, the channels and
their units, and commands. The arithmetic (CRC-8, the conversions) stays in
Python and is named by the map's `conversion` (see `conversions.py`), so a
sensor of a kind already known takes a map, not a fork.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ....protocol import NAME_REGEX
from ..declarations import builtin_names, load_declaration

Byte = Annotated[int, msgspec.Meta(ge=0, le=0xFF)]
#: 7-bit addresses outside the reserved ones (0x00..0x02, 0x78..0x7F).
Address = Annotated[int, msgspec.Meta(ge=0x03, le=0x77)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=10)]
Length = Annotated[int, msgspec.Meta(ge=0, le=64)]
Name = Annotated[str, msgspec.Meta(pattern=NAME_REGEX)]

FOLDER = "i2c_maps"


class _Struct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Maps are strict: a typo is an error, not a default silently taken."""


class Crc(_Struct, frozen=True, kw_only=True):
    """A CRC-8 after every 16-bit word of every answer (MSB first, no final XOR)."""

    polynomial: Byte
    init: Byte = 0x00


class Transfer(_Struct, frozen=True, kw_only=True):
    """One exchange: a command written on its own, `wait_s`, then a read of `read` bytes;
    or a register read (its address written, then a read after a repeated start).
    """

    command: list[Byte] = []
    register: Byte | None = None
    wait_s: Seconds = 0.0
    read: Length = 0


class Refused(_Struct, frozen=True, kw_only=True):
    """Another part that answers the identity probe with one of `values`, and why it will not do."""

    values: list[Byte]
    name: str
    why: str


class Identify(Transfer, frozen=True, kw_only=True):
    """How opening tells that the sensor is there (a sensor with a CRC: any good answer)."""

    #: What the answer's first byte is called in messages ("chip id").
    name: str = "answer"
    #: The first byte the right sensor answers; None: any answer will do.
    expect: Byte | None = None
    refuse: list[Refused] = []


class Busy(_Struct, frozen=True, kw_only=True):
    """A status register, polled until `mask` clears (the measurement is done) or `timeout_s`."""

    register: Byte
    mask: Byte
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=10)] = 0.1


class Mode(_Struct, frozen=True, kw_only=True):
    """One way of measuring (an SHT3x's repeatability): its command and its longest time."""

    command: list[Byte]
    wait_s: Seconds = 0.0


class Measure(Transfer, frozen=True, kw_only=True):
    """One measurement: `setup` writes, the command (or the mode's), the wait, `busy`, the read."""

    #: Written first, each on its own, in order (a register address and its value).
    setup: list[list[Byte]] = []
    busy: Busy | None = None
    #: Measuring modes by name, chosen with `settings.mode`; `mode` is the default.
    modes: dict[str, Mode] = {}
    mode: str = ""


class I2cChannel(_Struct, frozen=True, kw_only=True):
    """One channel. With `conversion = "linear"`: offset + span * word / full_scale."""

    name: Name
    unit: str = ""
    description: str = ""
    #: Decimal places the value is rounded to.
    decimals: Annotated[int, msgspec.Meta(ge=0, le=9)] = 2
    #: Which 16-bit big-endian word of the answer (CRCs taken out), for "linear".
    word: Annotated[int, msgspec.Meta(ge=0)] | None = None
    offset: float = 0.0
    span: float = 1.0
    full_scale: Annotated[int, msgspec.Meta(gt=0)] = 0xFFFF


class Confirm(Transfer, frozen=True, kw_only=True):
    """A read-back after a switch: the bits of `mask` in the answer's first word are set when on."""

    mask: Annotated[int, msgspec.Meta(gt=0, le=0xFFFF)]


class Switch(_Struct, frozen=True, kw_only=True):
    """A command with one bool argument `on`: it writes `on` or `off`, then reads back `confirm`."""

    name: Name
    description: str = ""
    on: list[Byte]
    off: list[Byte]
    confirm: Confirm | None = None
    #: A physical act whose mistake can harm (heating, dosing, motion): the
    #: dashboard asks for confirmation before sending it.
    dangerous: bool = False


class SensorMap(_Struct, frozen=True, kw_only=True):
    """One kind of I2C sensor, declared."""

    kind: str
    description: str = ""
    #: The addresses the part can have; the first is the default.
    addresses: list[Address]
    #: The arithmetic that makes values of a measurement: a name in `conversions.CONVERSIONS`.
    conversion: str = "linear"
    crc: Crc | None = None
    identify: Identify
    #: Read once on opening, in order, and given to the conversion (trimming values).
    calibration: list[Transfer] = []
    measure: Measure
    channels: list[I2cChannel]
    commands: list[Switch] = []


def builtin_maps() -> list[str]:
    """Names of the I2C sensor maps that ship with the agent."""
    return builtin_names(FOLDER)


def load_map(name_or_path: str) -> SensorMap:
    """A built-in map by name, or a map file by path; ValueError says what is wrong and where."""
    return load_declaration(name_or_path, FOLDER, SensorMap, "I2C sensor map", check_map)


def check_map(sensor_map: SensorMap, source: str) -> None:
    """ValueError, naming `source` and the entry, if the map cannot work."""
    from .conversions import CONVERSIONS  # conversions know maps' shapes, not the reverse

    def fail(message: str) -> None:
        raise ValueError(f"{source}: {message}")

    if not sensor_map.addresses:
        fail("addresses: expected at least one address")
    if not sensor_map.channels:
        fail("channels: expected at least one channel")
    names = [c.name for c in sensor_map.channels] + [c.name for c in sensor_map.commands]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        fail(f"declared twice: {', '.join(twice)}")
    measure = sensor_map.measure
    transfers: list[tuple[str, Transfer]] = [
        ("identify", sensor_map.identify),
        *((f"calibration[{i}]", t) for i, t in enumerate(sensor_map.calibration)),
        *(
            (f"commands[{i}].confirm", c.confirm)
            for i, c in enumerate(sensor_map.commands)
            if c.confirm
        ),
    ]
    if measure.modes:
        if measure.command or measure.register is not None:
            fail("measure: a command comes from the modes, or from measure itself, not both")
        if measure.mode not in measure.modes:
            fail(f"measure.mode: expected one of {', '.join(measure.modes)}, got {measure.mode!r}")
        transfers += [
            (
                f"measure.modes.{name}",
                Transfer(command=m.command, wait_s=m.wait_s, read=measure.read),
            )
            for name, m in measure.modes.items()
        ]
    else:
        transfers.append(("measure", measure))
    for where, transfer in transfers:
        problem = _transfer_problem(transfer, sensor_map.crc is not None)
        if problem:
            fail(f"{where}: {problem}")
    conversion = CONVERSIONS.get(sensor_map.conversion)
    if conversion is None:
        fail(f"conversion: unknown {sensor_map.conversion!r}; known: {', '.join(CONVERSIONS)}")
    else:
        problem = conversion.check(sensor_map)
        if problem:
            fail(problem)


def _transfer_problem(transfer: Transfer, crc: bool) -> str:
    if bool(transfer.command) == (transfer.register is not None):
        return "expected a command or a register (one of them)"
    if transfer.read == 0:
        return "read: expected the number of bytes it answers"
    if crc and transfer.read % 3:
        return f"read: {transfer.read} bytes, but with a CRC an answer is words of 3"
    return ""


def data_length(sensor_map: SensorMap, read: int) -> int:
    """How many data bytes an answer of `read` bytes holds, its CRCs taken out."""
    return read // 3 * 2 if sensor_map.crc is not None else read
