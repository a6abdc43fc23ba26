"""Pure models of the demo lab's instruments: a command line and a time in, a reply line out;
a streaming instrument also says, for a time, which lines it sent unasked.

Physics is a function of state and elapsed time only, so tests can advance a
model by any amount of simulated time without sleeping.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


class Instrument:
    """Base: answers one command line at a time, and may send lines unasked."""

    def __init__(self, serial: str, rng: random.Random) -> None:
        self.serial = serial
        self.rng = rng

    def handle(self, line: str, now: float) -> str | None:
        """Answer one command: the reply line; "" to take it and answer nothing (an SCPI
        setting); None while the command is still being worked on."""
        raise NotImplementedError

    def emit(self, now: float) -> list[str]:
        """Lines sent without being asked by `now` (a streaming instrument's frames)."""
        return []


class _Ticker:
    """Due times of a periodic line: at most one per call, so a late caller gets no burst."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.next: float | None = None

    def due(self, now: float) -> bool:
        if self.next is None:
            self.next = now + self.period_s
            return False
        if now < self.next:
            return False
        self.next += self.period_s
        if self.next <= now:
            self.next = now + self.period_s
        return True


@dataclass
class _Drift:
    """A slow random walk around a mean, bounded in amplitude."""

    mean: float
    amplitude: float
    period_s: float
    phase: float = 0.0

    def at(self, now: float) -> float:
        return self.mean + self.amplitude * math.sin(2 * math.pi * now / self.period_s + self.phase)


class Thermometer(Instrument):
    """Steeping-tank thermometer, SCPI-flavoured: `*IDN?`, `MEAS?`."""

    model = "T-10"

    def __init__(self, serial: str, rng: random.Random, mean_c: float = 14.0) -> None:
        super().__init__(serial, rng)
        self.temperature = _Drift(mean_c, 0.3, 600.0, rng.uniform(0, 6.3))

    def measure(self, now: float) -> str:
        """The MEAS? answer."""
        return f"{self.temperature.at(now) + self.rng.gauss(0, 0.02):.2f}"

    def handle(self, line: str, now: float) -> str | None:
        """Answer one command."""
        if line == "*IDN?":
            return f"Kleinmaelzung,{self.model},{self.serial},1.0"
        if line == "MEAS?":
            return self.measure(now)
        return "ERR unknown command"


class Hygrometer(Thermometer):
    """Germination-chamber thermo-hygrometer: `MEAS?` → `16.31,94.8`."""

    model = "TH-20"

    def __init__(self, serial: str, rng: random.Random) -> None:
        super().__init__(serial, rng, mean_c=16.0)
        self.humidity = _Drift(95.0, 1.5, 420.0, rng.uniform(0, 6.3))

    def measure(self, now: float) -> str:
        """The MEAS? answer: temperature and relative humidity."""
        humidity = min(100.0, self.humidity.at(now) + self.rng.gauss(0, 0.1))
        return f"{super().measure(now)},{humidity:.1f}"


class StreamingHygrometer(Hygrometer):
    """A thermo-hygrometer that prints a reading every 200 ms without being asked:
    `T=+16.31C RH=94.8%`. It answers `*IDN?` in between."""

    model = "TH-30"
    period_s = 0.2

    def __init__(self, serial: str, rng: random.Random) -> None:
        super().__init__(serial, rng)
        self._ticker = _Ticker(self.period_s)

    def frame(self, now: float) -> str:
        """One streamed line."""
        temperature, humidity = self.measure(now).split(",")
        return f"T={float(temperature):+.2f}C RH={humidity}%"

    def emit(self, now: float) -> list[str]:
        """A frame every `period_s`."""
        return [self.frame(now)] if self._ticker.due(now) else []

    def handle(self, line: str, now: float) -> str | None:
        """Only `*IDN?`; anything else it ignores (it has no command set)."""
        if line == "*IDN?":
            return f"Kleinmaelzung,{self.model},{self.serial},1.3"
        return ""


class KilnController(Instrument):
    """Kiln air controller: PV follows the setpoint with a first-order lag."""

    time_constant_s = 20.0
    gain = 5.0  # % output per °C of error

    def __init__(self, serial: str, rng: random.Random, now: float = 0.0) -> None:
        super().__init__(serial, rng)
        self.pv = 25.0
        self.sp = 65.0
        self._t = now

    def advance(self, now: float) -> None:
        """Move the process value forward to `now`."""
        dt = max(0.0, now - self._t)
        self._t = max(self._t, now)
        self.pv = self.sp + (self.pv - self.sp) * math.exp(-dt / self.time_constant_s)

    @property
    def output(self) -> float:
        """Heater output in %, a clamped P controller."""
        return min(100.0, max(0.0, self.gain * (self.sp - self.pv) + 0.4 * self.sp))

    def handle(self, line: str, now: float) -> str | None:
        """Answer one command."""
        self.advance(now)
        if line == "*IDN?":
            return f"Kleinmaelzung,KC-300,{self.serial},2.1"
        if line == "MEAS?":
            pv = self.pv + self.rng.gauss(0, 0.05)
            return f"PV={pv:.2f},SP={self.sp:.2f},OUT={self.output:.1f}"
        if line == "SP?":
            return f"{self.sp:.2f}"
        if line.startswith("SP "):
            try:
                value = float(line[3:])
            except ValueError:
                return "ERR bad value"
            if not math.isfinite(value):
                return "ERR bad value"
            if not 0.0 <= value <= 250.0:
                return "ERR setpoint out of range"
            self.sp = value
            return "OK"
        return "ERR unknown command"


@dataclass
class _Load:
    """Something on the pan: its weight and when it was put there."""

    grams: float
    since: float


@dataclass
class Balance(Instrument):
    """Lab balance speaking a subset of MT-SICS (`SI`, `S`, `T`, `Z`, `I4`)."""

    serial: str
    rng: random.Random
    settle_s: float = 1.5
    load: _Load = field(default_factory=lambda: _Load(0.0, -1e9))
    zero_offset: float = 0.0
    tare: float = 0.0
    _next_change: float | None = None
    _waiting_since: float | None = None
    #: `SIR` on: a weight line every `stream_period_s` until `@`.
    streaming: bool = False
    stream_period_s: float = 0.1
    _ticker: _Ticker | None = None

    def emit(self, now: float) -> list[str]:
        """While `SIR` is on: the current weight, stable or not, at the stream rate."""
        if not self.streaming:
            return []
        if self._ticker is None:
            self._ticker = _Ticker(self.stream_period_s)
        if not self._ticker.due(now):
            return []
        self._maybe_change_load(now)
        return [self._weight_line(now)]

    def _weight_line(self, now: float) -> str:
        flag = "S" if self.stable(now) else "D"
        return f"S {flag} {self.gross(now) - self.tare:>10.3f} g"

    def place(self, grams: float, now: float) -> None:
        """Put a load on the pan (replacing what was there)."""
        self.load = _Load(grams, now)

    def stable(self, now: float) -> bool:
        """Whether the reading has settled."""
        return now - self.load.since >= self.settle_s

    def gross(self, now: float) -> float:
        """Weight relative to the zero point, with settling wobble while unstable."""
        weight = self.load.grams - self.zero_offset
        elapsed = now - self.load.since
        if elapsed < self.settle_s:
            weight += 0.5 * self.load.grams * math.exp(-3 * elapsed) * math.cos(12 * elapsed)
        return weight + self.rng.gauss(0, 0.0005)

    def _maybe_change_load(self, now: float) -> None:
        # Now and then a lab assistant puts on a new sample of malt.
        if self._next_change is None:
            self._next_change = now + self.rng.uniform(20, 40)
        elif now >= self._next_change:
            self.place(round(self.rng.uniform(5.0, 25.0), 3), now)
            self._next_change = now + self.rng.uniform(20, 40)

    def handle(self, line: str, now: float) -> str | None:
        """Answer one command; `S` waits (returns None) until stable or 3 s pass."""
        self._maybe_change_load(now)
        if line != "S":
            self._waiting_since = None
        if line == "SI":
            return self._weight_line(now)
        if line == "SIR":
            # No answer of its own: the weight lines start (`emit`).
            self.streaming, self._ticker = True, None
            return ""
        if line == "@":
            # Reset: stops streaming, cancels what was waiting, forgets the tare.
            self.streaming, self.tare = False, 0.0
            return f'I4 A "{self.serial}"'
        if line == "S":
            if self.stable(now):
                self._waiting_since = None
                return f"S S {self.gross(now) - self.tare:>10.3f} g"
            if self._waiting_since is None:
                self._waiting_since = now
            if now - self._waiting_since >= 3.0:
                self._waiting_since = None
                return "S I"
            return None
        if line == "T":
            if not self.stable(now):
                return "T I"
            self.tare = self.gross(now)
            return f"T S {self.tare:>10.3f} g"
        if line == "Z":
            if not self.stable(now):
                return "Z I"
            self.zero_offset = self.load.grams
            self.tare = 0.0
            return "Z A"
        if line == "I4":
            return f'I4 A "{self.serial}"'
        return "ES"


class SerialMultimeter(Instrument):
    """A bench multimeter speaking SCPI on RS232, measuring a 12 V supply.

    As SCPI instruments do, a setting (`CONF:VOLT:DC 10`) answers nothing, and
    a command it does not know puts an error in its queue and answers
    nothing; `SYST:ERR?` takes the oldest error out (`+0,"No error"`).
    """

    model = "KMZ-DMM-1"
    ranges = (0.1, 1.0, 10.0, 100.0, 1000.0)

    def __init__(self, serial: str, rng: random.Random) -> None:
        super().__init__(serial, rng)
        self.range_v = 100.0
        self.errors: list[str] = []
        self.dc = _Drift(12.0, 0.02, 300.0, rng.uniform(0, 6.3))

    def handle(self, line: str, now: float) -> str | None:
        """Answer one SCPI command (upper case, short forms as the profile sends them)."""
        command, _, argument = line.strip().upper().partition(" ")
        if command == "*IDN?":
            return f"KLEINMAELZUNG,{self.model},{self.serial},1.0"
        if command == "*RST":
            self.range_v = 100.0
            return ""
        if command == "*CLS":
            self.errors.clear()
            return ""
        if command == "MEAS:VOLT:DC?":
            return f"{self.dc.at(now) + self.rng.gauss(0, 0.0005):+.6E}"
        if command == "MEAS:VOLT:AC?":
            return f"{0.015 + abs(self.rng.gauss(0, 0.0005)):+.6E}"  # the supply's ripple
        if command == "CONF:VOLT:DC?":
            return f"{self.range_v:+.8E}"
        if command == "CONF:VOLT:DC":
            try:
                value = float(argument)
            except ValueError:
                return self._error('-104,"Data type error"')
            if value not in self.ranges:
                return self._error('-222,"Data out of range"')
            self.range_v = value
            return ""
        if command == "SYST:ERR?":
            return self.errors.pop(0) if self.errors else '+0,"No error"'
        return self._error('-113,"Undefined header"')

    def _error(self, error: str) -> str:
        if len(self.errors) < 20:  # the queue is bounded, as a real one is
            self.errors.append(error)
        return ""


def make_instrument(instrument_id: str, rng: random.Random, now: float) -> Instrument:
    """The model behind one of the demo lab's instrument ids."""
    serial = f"KMZ{rng.randrange(10**6, 10**7)}"
    if instrument_id == "balance" or instrument_id.startswith("balance"):
        balance = Balance(serial=serial, rng=rng)
        balance.place(12.345, now - 10.0)
        return balance
    if instrument_id.startswith("kiln"):
        return KilnController(serial, rng, now)
    if instrument_id.startswith("germ"):
        return Hygrometer(serial, rng)
    if instrument_id.startswith("hygro"):
        return StreamingHygrometer(serial, rng)
    if instrument_id.startswith("dmm"):
        return SerialMultimeter(serial, rng)
    return Thermometer(serial, rng)
