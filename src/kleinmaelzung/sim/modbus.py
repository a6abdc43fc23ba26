"""A simulated kiln controller speaking Modbus: a pymodbus server on loopback TCP
(`KilnModbusServer`), or Modbus RTU on a pty null modem (`KilnModbusRtuLine`).

The register layout is the shipped map `kmz-kiln-modbus` (0-based addresses):

    input registers  0-1  air temperature, float32, °C
                     2    grain temperature, int16, 0.1 °C
                     3-4  heater output, float32 low word first, %
    holding          0    setpoint, int16, 0.1 °C (writable up to `setpoint_maximum`; else exc. 3)
                     1    fan speed, uint16, % (writable, 0..100; else exception 3)
    coil             0    heater enabled (writable)
    discrete input   0    door open

Any other address answers with exception 2 (illegal data address), as a real
controller does. Several unit ids on one server stand for several controllers
on one RS-485 line. The registers are computed from each unit's model when
they are read, so the physics runs only as fast as someone polls.

Unlike a real line, pymodbus answers a unit id it does not serve with
exception 4 (server device failure) instead of silence.
"""

from __future__ import annotations

import asyncio
import math
import os
import struct
import time
import tty
from collections.abc import Callable, Sequence

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

_READ_INPUT, _READ_HOLDING, _READ_DISCRETE = 4, 3, 2
_WRITE_HOLDING = {6, 16}
_WRITE_COILS = {5, 15}


class KilnModbusUnit:
    """One kiln controller's state: the air follows the setpoint with a first-order lag."""

    time_constant_s = 20.0
    gain = 5.0  # % output per °C of error

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._t = clock()
        self.air_temperature = 25.0
        self.grain_temperature = 22.0
        self.setpoint = 65.0
        self.fan_speed = 50
        self.heater_enabled = True
        self.door_open = False
        #: The highest setpoint this controller takes (its configured limit).
        self.setpoint_maximum = 120.0
        #: Called with each request's function code (for tests that check the wire).
        self.on_function: Callable[[int], object] = lambda function_code: None
        self._answering = asyncio.Event()
        self._answering.set()

    @property
    def silent(self) -> bool:
        """While true, the unit takes requests and never answers (a hung controller)."""
        return not self._answering.is_set()

    @silent.setter
    def silent(self, silent: bool) -> None:
        if silent:
            self._answering.clear()
        else:
            self._answering.set()

    async def wait_answering(self) -> None:
        """Return once the unit is not silent."""
        await self._answering.wait()

    def advance(self) -> None:
        """Move the process values forward to now."""
        now = self._clock()
        dt, self._t = max(0.0, now - self._t), max(self._t, now)
        target = self.setpoint if self.heater_enabled else 20.0
        self.air_temperature = target + (self.air_temperature - target) * math.exp(
            -dt / self.time_constant_s
        )
        if not math.isfinite(self.air_temperature):
            return  # a broken air probe (NaN, as controllers report it) heats nothing
        self.grain_temperature += (self.air_temperature - self.grain_temperature) * (
            1 - math.exp(-dt / (4 * self.time_constant_s))
        )

    @property
    def heater_output(self) -> float:
        """Heater output in %, a clamped P controller; 0 while switched off."""
        if not self.heater_enabled:
            return 0.0
        return min(100.0, max(0.0, self.gain * (self.setpoint - self.air_temperature)))

    def input_registers(self) -> list[int]:
        """Input registers 0..4 as the wire carries them."""
        air = _words(">f", self.air_temperature)
        grain = _words(">h", round(self.grain_temperature * 10))
        output = _words(">f", self.heater_output)
        return [*air, *grain, output[1], output[0]]  # heater output: low word first

    def holding_registers(self) -> list[int]:
        """Holding registers 0..1 as the wire carries them."""
        return [*_words(">h", round(self.setpoint * 10)), self.fan_speed]

    def write_holding(self, address: int, values: Sequence[int]) -> ExcCodes | None:
        """Take a write of holding registers; an exception code if it is refused."""
        updates: dict[int, int] = dict(enumerate(values, start=address))
        setpoint, fan = self.setpoint, self.fan_speed
        if 0 in updates:
            setpoint = struct.unpack(">h", struct.pack(">H", updates[0]))[0] / 10
            if not 0.0 <= setpoint <= self.setpoint_maximum:
                return ExcCodes.ILLEGAL_VALUE
        if 1 in updates:
            fan = updates[1]
            if not 0 <= fan <= 100:
                return ExcCodes.ILLEGAL_VALUE
        self.advance()
        self.setpoint, self.fan_speed = setpoint, fan
        return None


def _words(fmt: str, value: float) -> list[int]:
    data = struct.pack(fmt, value)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


class _UnitActions:
    """pymodbus calls `action` on every access: refresh registers from the model, take writes."""

    def __init__(self, unit: KilnModbusUnit) -> None:
        self.unit = unit

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        unit = self.unit
        await unit.wait_answering()
        unit.on_function(function_code)
        unit.advance()
        if function_code == _READ_INPUT:
            _store(current_registers, start_address, unit.input_registers())
        elif function_code == _READ_HOLDING:
            _store(current_registers, start_address, unit.holding_registers())
        elif function_code == _READ_DISCRETE:
            # Bits are packed 16 to a register, bit 0 first; the door is bit 0.
            current_registers[0] = (current_registers[0] & ~1) | int(unit.door_open)
        elif function_code in _WRITE_HOLDING and set_values is not None:
            return unit.write_holding(address, [int(v) for v in set_values])
        elif function_code in _WRITE_COILS and set_values and address <= 0 < address + count:
            unit.heater_enabled = bool(set_values[-address])
        return None


def _store(registers: list[int], start_address: int, values: list[int]) -> None:
    for address, value in enumerate(values):
        registers[address - start_address] = value


def _device(unit_id: int, unit: KilnModbusUnit) -> SimDevice:
    return SimDevice(
        id=unit_id,
        simdata=(
            [SimData(0, values=[True], datatype=DataType.BITS)],
            [SimData(0, values=[False], datatype=DataType.BITS)],
            [SimData(0, values=unit.holding_registers(), datatype=DataType.REGISTERS)],
            [SimData(0, values=unit.input_registers(), datatype=DataType.REGISTERS)],
        ),
        action=_UnitActions(unit).action,
    )


class KilnModbusServer:
    """Kiln controllers (one per unit id) behind one Modbus TCP server on `host`.

    `async with KilnModbusServer(units=(1, 2)) as server:` listens on a free
    port (`server.port`); `server.units[1]` is unit 1's model.
    """

    def __init__(
        self, *, units: Sequence[int] = (1,), host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.host = host
        self.port = port
        self.units = {unit_id: KilnModbusUnit() for unit_id in units}
        #: Client connections open now.
        self.connections = 0
        self._server: ModbusTcpServer | None = None

    async def start(self) -> None:
        """Listen; `port` is the bound port afterwards."""
        devices = [_device(unit_id, unit) for unit_id, unit in self.units.items()]
        server = ModbusTcpServer(
            devices, address=(self.host, self.port), trace_connect=self._count_connection
        )
        await server.serve_forever(background=True)
        sockets = getattr(server.transport, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._server = server

    def _count_connection(self, connected: bool) -> None:
        self.connections += 1 if connected else -1

    async def stop(self) -> None:
        """Stop listening and drop every client connection; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> KilnModbusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class _NullModem:
    """Two pty pairs joined master to master: a serial cable between two tty paths."""

    def __init__(self) -> None:
        self._masters: list[int] = []
        self._slaves: list[int] = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._masters.append(master)
            # Held open so that a master never reads EIO while its side is closed.
            self._slaves.append(slave)
        self.paths = (os.ttyname(self._slaves[0]), os.ttyname(self._slaves[1]))
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        first, second = self._masters
        self._loop.add_reader(first, self._copy, first, second)
        self._loop.add_reader(second, self._copy, second, first)

    def _copy(self, source: int, target: int) -> None:
        try:
            data = os.read(source, 4096)
            os.write(target, data)
        except (BlockingIOError, InterruptedError):
            pass  # a full buffer drops bytes, as an overrun line does
        except OSError:
            pass  # the other side is not open right now

    def close(self) -> None:
        if self._loop is not None:
            for master in self._masters:
                self._loop.remove_reader(master)
            self._loop = None
        for fd in self._masters + self._slaves:
            os.close(fd)
        self._masters, self._slaves = [], []


class KilnModbusRtuLine:
    """Kiln controllers (one per unit id) on a simulated RS-485 line: Modbus RTU over ptys.

    `async with KilnModbusRtuLine(units=(1, 2)) as line:` the agent opens
    `line.path` as it would open /dev/ttyUSB0; `line.units[2]` is unit 2's model.
    """

    def __init__(self, *, units: Sequence[int] = (1,), baudrate: int = 19200) -> None:
        self.baudrate = baudrate
        self.units = {unit_id: KilnModbusUnit() for unit_id in units}
        self._modem: _NullModem | None = None
        self._server: ModbusSerialServer | None = None
        self.path = ""

    async def start(self) -> None:
        """Open the line; `path` is the tty for the agent afterwards."""
        modem = _NullModem()
        modem.start()
        devices = [_device(unit_id, unit) for unit_id, unit in self.units.items()]
        server = ModbusSerialServer(devices, port=modem.paths[0], baudrate=self.baudrate)
        await server.serve_forever(background=True)
        self._modem, self._server, self.path = modem, server, modem.paths[1]

    async def stop(self) -> None:
        """Stop serving and close the ptys; idempotent."""
        server, self._server = self._server, None
        modem, self._modem = self._modem, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
        if modem is not None:
            modem.close()

    async def __aenter__(self) -> KilnModbusRtuLine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve_kiln(
    *, units: Sequence[int] = (1,), host: str = "127.0.0.1", port: int = 5020
) -> None:
    """Serve simulated kiln controllers until cancelled (for `kmz sim`)."""
    async with KilnModbusServer(units=units, host=host, port=port):
        await asyncio.Event().wait()
