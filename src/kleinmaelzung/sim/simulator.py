"""Simulated instruments behind real pseudo-terminals, served by one background thread.

Each instrument gets a pty pair: the simulator answers on the master side, and
an agent opens the slave path (e.g. /dev/pts/7) as it would open /dev/ttyUSB0.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import selectors
import signal
import threading
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from .instruments import (
    Balance,
    Hygrometer,
    Instrument,
    KilnController,
    SerialMultimeter,
    StreamingHygrometer,
    Thermometer,
    make_instrument,
)

#: What `replug(..., as_kind=...)` can put behind a port: a kind (as the
#: profiles name it), its model, and an instrument id `make_instrument` builds it for.
KINDS: dict[str, tuple[type[Instrument], str]] = {
    "thermometer": (Thermometer, "steep-water"),
    "thermo-hygrometer": (Hygrometer, "germ-chamber"),
    "kiln-controller": (KilnController, "kiln-air"),
    "balance": (Balance, "balance"),
    "multimeter": (SerialMultimeter, "dmm"),
    "streaming-thermo-hygrometer": (StreamingHygrometer, "hygro"),
}

DEMO_INSTRUMENTS: tuple[str, ...] = ("steep-water", "germ-chamber", "kiln-air", "balance")
_TICK_S = 0.05
_MAX_LINE = 256
#: Line noise for `set_garbled`: each printable character rotated by 47 (ROT47),
#: so a garbled answer changes whenever the real one does.
_NOISE = str.maketrans(
    "".join(chr(c) for c in range(33, 127)),
    "".join(chr(33 + (c - 33 + 47) % 94) for c in range(33, 127)),
)


@dataclass
class _Port:
    instrument_id: str
    model: Instrument
    master: int
    slave: int
    path: str
    buffer: bytearray = field(default_factory=bytearray)
    waiting: str | None = None  # a command the model has not answered yet
    silent: bool = False
    garbled: bool = False


class Simulator:
    """The demo lab's instruments on ptys; `start()` returns {instrument id: tty path}."""

    def __init__(
        self, instruments: Sequence[str] = DEMO_INSTRUMENTS, *, seed: int | None = None
    ) -> None:
        self._ids = list(instruments)
        self._rng = random.Random(seed)
        self._ports: dict[str, _Port] = {}
        self._originals: dict[str, Instrument] = {}
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1

    @property
    def paths(self) -> dict[str, str]:
        """The tty path of each instrument."""
        return {i: p.path for i, p in self._ports.items()}

    def model(self, instrument_id: str) -> Instrument:
        """The instrument model behind a port (for tests and fault injection)."""
        return self._ports[instrument_id].model

    def start(self) -> dict[str, str]:
        """Open the ptys and start serving; return the tty paths."""
        if self._thread is not None:
            return self.paths
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        now = time.monotonic()
        for instrument_id in self._ids:
            model = make_instrument(instrument_id, self._rng, now)
            self._originals[instrument_id] = model
            self._open(instrument_id, model)
        self._thread = threading.Thread(target=self._serve, name="kmz-sim", daemon=True)
        self._thread.start()
        return self.paths

    def stop(self) -> None:
        """Stop serving and close every pty; idempotent."""
        if self._thread is None:
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        self._thread = None
        for port in list(self._ports.values()):
            self._close(port)
        self._ports.clear()
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def set_silent(self, instrument_id: str, silent: bool) -> None:
        """Make an instrument ignore every command (a hung device), or answer again."""
        with self._lock:
            self._ports[instrument_id].silent = silent

    def set_garbled(self, instrument_id: str, garbled: bool) -> None:
        """Make an instrument answer line noise (a wrong baud rate, a bad cable), or not."""
        with self._lock:
            self._ports[instrument_id].garbled = garbled

    def unplug(self, instrument_id: str) -> None:
        """Close the instrument's pty, as if its USB adapter were pulled out."""
        with self._lock:
            port = self._ports[instrument_id]
            self._close(port)

    def replug(self, instrument_id: str, as_kind: str | None = None) -> str:
        """Plug an unplugged instrument back in; it gets a NEW tty path, as USB would.

        With `as_kind` (a key of `KINDS`), a different instrument of that kind
        is plugged into the same port instead, as when cables get swapped; the
        original instrument answers again when replugged with its own kind or
        without `as_kind`.
        """
        with self._lock:
            port = self._ports[instrument_id]
            original = self._originals[instrument_id]
            model = original
            if as_kind is not None:
                if as_kind not in KINDS:
                    raise ValueError(f"unknown kind {as_kind!r}; known: {', '.join(KINDS)}")
                cls, like = KINDS[as_kind]
                if type(original) is not cls:
                    model = make_instrument(like, self._rng, time.monotonic())
            self._close(port)  # idempotent: a port still plugged in is pulled out first
            return self._open(instrument_id, model).path

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _open(self, instrument_id: str, model: Instrument) -> _Port:
        master, slave = os.openpty()
        # Raw: bytes pass unchanged, no echo, no line editing, like a UART.
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        port = _Port(instrument_id, model, master, slave, os.ttyname(slave))
        self._ports[instrument_id] = port
        self._selector.register(master, selectors.EVENT_READ, port)
        return port

    def _close(self, port: _Port) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(port.master)
        for fd in (port.master, port.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        port.master = port.slave = -1

    def _serve(self) -> None:
        while not self._stop.is_set():
            events = self._selector.select(timeout=_TICK_S)
            now = time.monotonic()
            with self._lock:
                for key, _ in events:
                    port = key.data
                    if port is None:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 64)
                        continue
                    self._receive(port, now)
                for port in self._ports.values():
                    if port.master < 0:
                        continue
                    if port.waiting is not None:
                        self._answer(port, port.waiting, now)
                    lines = port.model.emit(now)
                    if not port.silent:  # a hung device does not stream either
                        for line in lines:
                            self._write(port, line)

    def _receive(self, port: _Port, now: float) -> None:
        try:
            data = os.read(port.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # EIO: no process has the slave open right now; nothing to read.
            return
        if port.silent:
            return
        port.buffer += data
        while b"\n" in port.buffer:
            raw, _, rest = port.buffer.partition(b"\n")
            port.buffer = bytearray(rest)
            line = raw.decode("ascii", errors="replace").strip()
            if line:
                self._answer(port, line, now)
        if len(port.buffer) > _MAX_LINE:
            port.buffer.clear()  # line noise without a terminator: a real device drops it too

    def _answer(self, port: _Port, line: str, now: float) -> None:
        reply = port.model.handle(line, now)
        port.waiting = line if reply is None else None
        if reply:  # "": taken, and nothing to say (an SCPI setting)
            self._write(port, reply)

    def _write(self, port: _Port, line: str) -> None:
        if port.garbled:
            line = line.translate(_NOISE)
        with contextlib.suppress(BlockingIOError, OSError):
            # Nobody listening fills the pty buffer: drop, as a UART would.
            os.write(port.master, line.encode("ascii") + b"\r\n")


def _write_paths(paths_file: str, paths: dict[str, str]) -> None:
    target = Path(paths_file)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(paths, indent=2) + "\n")
    temporary.replace(target)  # readers never see half a file


def run_simulator(
    instruments: Sequence[str],
    *,
    seed: int | None,
    paths_file: str | None,
    on_ready: Callable[[dict[str, str]], None] | None = None,
) -> None:
    """Serve the instruments in the foreground until SIGINT or SIGTERM."""
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with Simulator(instruments, seed=seed) as simulator:
            if paths_file:
                _write_paths(paths_file, simulator.paths)
            if on_ready is not None:
                on_ready(simulator.paths)
            stop.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if paths_file:
            with contextlib.suppress(FileNotFoundError):
                Path(paths_file).unlink()
