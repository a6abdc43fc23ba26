"""One sensor at one address, driven by its map: probe it, measure, run its commands."""

from __future__ import annotations

import time
from typing import Any

from ....protocol import Channel, CommandArg, CommandSpec, Value
from ...errors import InstrumentError, NoAnswer, PortError
from .base import I2cBus
from .conversions import CONVERSIONS, Converter
from .crc import strip_crc
from .maps import Mode, SensorMap, Transfer


class Sensor:
    """A sensor as its map declares it. Methods run in the bus thread.

    They may raise `OSError` (the driver maps the kernel's errors), `PortError`
    (the wrong device answered) or `InstrumentError` (a bad CRC, a skipped
    measurement).
    """

    def __init__(self, sensor_map: SensorMap, address: int, where: str, mode: str = "") -> None:
        self.map = sensor_map
        self.kind = sensor_map.kind
        self.address = address
        #: "/dev/i2c-1@0x44", for messages.
        self.where = where
        self.channels = tuple(
            Channel(name=c.name, unit=c.unit, description=c.description)
            for c in sensor_map.channels
        )
        self.commands = tuple(
            CommandSpec(
                name=c.name,
                description=c.description,
                args=[CommandArg(name="on", type="bool")],
                dangerous=c.dangerous,
            )
            for c in sensor_map.commands
        )
        self._decimals = {c.name: c.decimals for c in sensor_map.channels}
        measure = sensor_map.measure
        chosen: Mode | None = measure.modes[mode or measure.mode] if measure.modes else None
        self._measure = Transfer(
            command=chosen.command if chosen else measure.command,
            register=measure.register,
            wait_s=chosen.wait_s if chosen else measure.wait_s,
            read=measure.read,
        )
        self._convert: Converter | None = None
        #: What the sensor answered when probed ("bme280 (chip id 0x60)"); None until then.
        self.identity: str | None = None

    def probe(self, line: I2cBus) -> None:
        """Check that this kind of sensor answers at the address; read its calibration once."""
        self._convert, self.identity = None, None
        identify = self.map.identify
        answer = self._transfer(line, identify, "identify")
        identity = self.kind
        if identify.expect is not None:
            found = answer[0]
            for other in identify.refuse:
                if found in other.values:
                    raise PortError(
                        f"{self.where}: a {other.name} ({identify.name} 0x{found:02X})"
                        f" answered: {other.why}"
                    )
            if found != identify.expect:
                raise PortError(
                    f"{self.where}: wrong sensor: {identify.name} 0x{found:02X},"
                    f" expected 0x{identify.expect:02X} ({self.kind})"
                )
            identity = f"{self.kind} ({identify.name} 0x{found:02X})"
        blocks = [
            self._transfer(line, block, f"calibration[{index}]")
            for index, block in enumerate(self.map.calibration)
        ]
        self._convert = CONVERSIONS[self.map.conversion].prepare(self.map, blocks)
        self.identity = identity

    def measure(self, line: I2cBus) -> dict[str, Value]:
        """One measurement, in the channels' units."""
        convert = self._convert
        if convert is None:
            raise PortError(f"{self.where}: not probed")
        measure = self.map.measure
        for setup in measure.setup:
            line.write(self.address, bytes(setup))
        data = self._transfer(line, self._measure, "measurement", busy=True)
        try:
            values = convert(data)
        except InstrumentError as exc:
            raise InstrumentError(f"{self.where}: {exc}") from None
        return {
            channel.name: round(values[channel.name], self._decimals[channel.name])
            for channel in self.channels
        }

    def execute(self, line: I2cBus, name: str, args: dict[str, Any]) -> Any:
        """Run a switch of the map (arguments already checked); read it back if the map says how."""
        switch = next(c for c in self.map.commands if c.name == name)
        on = bool(args["on"])
        line.write(self.address, bytes(switch.on if on else switch.off))
        confirm = switch.confirm
        if confirm is not None:
            answer = self._transfer(line, confirm, name)
            if bool(int.from_bytes(answer[:2], "big") & confirm.mask) != on:
                raise InstrumentError(f"{name} did not switch {'on' if on else 'off'}")
        return {"on": on}

    def _transfer(
        self, line: I2cBus, transfer: Transfer, what: str, *, busy: bool = False
    ) -> bytes:
        """Run one exchange of the map; its data, CRCs checked and taken out."""
        address = self.address
        if transfer.command:
            line.write(address, bytes(transfer.command))
        if transfer.wait_s:
            # The sensor's own measuring time, waited in the bus thread (never on the loop).
            time.sleep(transfer.wait_s)
        if busy and self.map.measure.busy is not None:
            self._wait_until_done(line)
        if transfer.register is not None:
            answer = line.write_read(address, bytes([transfer.register]), transfer.read)
        else:
            answer = line.read(address, transfer.read)
        crc = self.map.crc
        if crc is not None:
            return strip_crc(answer, what, crc.polynomial, crc.init)
        return answer

    def _wait_until_done(self, line: I2cBus) -> None:
        busy = self.map.measure.busy
        assert busy is not None
        deadline = time.monotonic() + busy.timeout_s
        while line.write_read(self.address, bytes([busy.register]), 1)[0] & busy.mask:
            if time.monotonic() > deadline:
                raise NoAnswer(f"{self.where}: measurement did not finish")
            time.sleep(0.001)
