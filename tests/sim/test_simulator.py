"""The simulator behind real pseudo-terminals, read as a serial client would."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import serial

from kleinmaelzung.sim import Simulator


def ask(path: str, line: str, timeout: float = 1.0) -> bytes:
    with serial.Serial(path, 9600, timeout=timeout) as port:
        port.write(line.encode() + b"\r\n")
        answer: bytes = port.readline()
        return answer


def test_every_instrument_answers_on_its_tty() -> None:
    with Simulator(seed=1) as sim:
        assert set(sim.paths) == {"steep-water", "germ-chamber", "kiln-air", "balance"}
        assert all(os.path.exists(p) and p.startswith("/dev/pts/") for p in sim.paths.values())
        assert ask(sim.paths["balance"], "SI").startswith(b"S S ")
        assert ask(sim.paths["kiln-air"], "SP 90") == b"OK\r\n"
        assert ask(sim.paths["kiln-air"], "SP?") == b"90.00\r\n"
        assert b"," in ask(sim.paths["germ-chamber"], "MEAS?")
        assert ask(sim.paths["steep-water"], "MEAS?").endswith(b"\r\n")


def test_silent_instrument_does_not_answer_until_resumed() -> None:
    with Simulator(["kiln-air"]) as sim:
        sim.set_silent("kiln-air", True)
        assert ask(sim.paths["kiln-air"], "SP?", timeout=0.3) == b""
        sim.set_silent("kiln-air", False)
        assert ask(sim.paths["kiln-air"], "SP?") == b"65.00\r\n"


def test_unplug_and_replug_gives_a_new_path() -> None:
    with Simulator(["kiln-air"]) as sim:
        old = sim.paths["kiln-air"]
        sim.unplug("kiln-air")
        new = sim.replug("kiln-air")
        assert ask(new, "SP?") == b"65.00\r\n"
        assert new == sim.paths["kiln-air"]
        assert old != new or os.path.exists(new)


def test_stop_leaves_no_thread_behind() -> None:
    before = threading.active_count()
    sim = Simulator()
    sim.start()
    sim.stop()
    sim.stop()
    assert threading.active_count() == before


def test_run_simulator_writes_paths_atomically(tmp_path: Path) -> None:
    import signal

    from kleinmaelzung.sim import run_simulator

    paths_file = tmp_path / "ptys.json"
    seen: dict[str, str] = {}

    def ready(paths: dict[str, str]) -> None:
        seen.update(json.loads(paths_file.read_text()))
        os.kill(os.getpid(), signal.SIGINT)  # the handler run_simulator installed stops it

    run_simulator(["balance"], seed=1, paths_file=str(paths_file), on_ready=ready)
    assert list(seen) == ["balance"]
    assert not paths_file.exists()


def test_a_streaming_instrument_sends_lines_unasked_on_its_tty() -> None:
    with Simulator(["hygro-floor"], seed=1) as sim:
        with serial.Serial(sim.paths["hygro-floor"], 9600, timeout=2.0) as port:
            port.reset_input_buffer()
            port.readline()  # perhaps the tail of a line sent before we came
            lines = [port.readline() for _ in range(3)]
        assert all(line.startswith(b"T=") and line.endswith(b"%\r\n") for line in lines), lines


def test_the_balance_streams_after_sir_until_reset() -> None:
    with (
        Simulator(["balance"], seed=1) as sim,
        serial.Serial(sim.paths["balance"], 9600, timeout=2.0) as port,
    ):
        port.write(b"SIR\r\n")
        assert port.readline().startswith(b"S S ")
        assert port.readline().startswith(b"S S ")
        port.write(b"@\r\n")
        # Weight lines sent before the reset may still be on their way.
        while (line := port.readline()).startswith(b"S "):
            pass
        assert line.startswith(b'I4 A "'), line
        port.timeout = 0.3
        assert port.readline() == b""


def test_a_scpi_setting_is_answered_by_silence_and_its_error_queue() -> None:
    with Simulator(["dmm-bench"], seed=1) as sim:
        assert ask(sim.paths["dmm-bench"], "CONF:VOLT:DC 3", timeout=0.3) == b""
        assert ask(sim.paths["dmm-bench"], "SYST:ERR?") == b'-222,"Data out of range"\r\n'
        assert ask(sim.paths["dmm-bench"], "*IDN?").startswith(b"KLEINMAELZUNG,KMZ-DMM-1,")
