"""A generic driver for instruments that speak a line protocol on a serial port.

The instrument is a declaration, a profile (`line_profiles.py` holds the
schema, `profiles/` the built-in ones). This module owns the port: finding
it (a path, a /dev/serial/by-id link, or a USB adapter's ids), the identify
probe, and reading by asking (poll) or by listening (stream).

Every line the instrument sends is sorted as it arrives: the answer a
command or the probe waits for; else, on a streaming instrument, a frame (it
matches the stream pattern), a known error (`error`, `errors`), or noise.

How a streaming instrument's frames become samples: `read()` returns the
newest frame that arrived since the previous `read()`, and if none has, waits
for the next one up to the reply timeout. Polled as fast as the instrument
sends or faster, every frame becomes exactly one sample, paced by the
instrument. Polled slower, each sample is the newest frame; the older ones
are counted in `stream.frames_superseded`, never queued, since a queue would
deliver readings ever further behind. A known error as the newest line (an
overloaded balance) is an InstrumentError at once; noise (a frame cut at
open, line noise) is skipped and counted in `stream.lines_skipped`, and is an
InstrumentError only if no frame arrives within the timeout. Silence is
NoAnswer, after the start command went out again: an instrument switched
off and on forgets that it was streaming.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import termios
from collections.abc import Callable
from typing import Any, NoReturn

import serial
import serial_asyncio_fast

from ...protocol import InstrumentInfo, Value
from ..config import InstrumentConfig
from ..errors import InstrumentError, NoAnswer, PortError
from ..ports import UsbIdentity, find_usb_port
from ..transcript import ByteTap
from .declarations import declared_info
from .line_profiles import (
    ChannelSpec,
    LineCommand,
    LineSettings,
    Parity,
    PollSpec,
    Profile,
    StreamSpec,
    builtin_profiles,
    compile_patterns,
    load_profile,
)
from .line_stream import LineReceiver, StreamLines
from .settings import decode_settings

__all__ = [
    "ChannelSpec",
    "LineCommand",
    "LineSettings",
    "Parity",
    "PollSpec",
    "Profile",
    "SerialLineDriver",
    "StreamSpec",
    "builtin_profiles",
    "load_profile",
]


class _Waiter:
    """An exchange waiting for its answer: which lines it takes, and where the first goes."""

    def __init__(self, accepts: Callable[[str], bool], future: asyncio.Future[str]) -> None:
        self.accepts = accepts
        self.future = future


def _any_line(line: str) -> bool:
    return True


class SerialLineDriver:
    """A line-protocol instrument on a serial port, driven by its profile."""

    def __init__(self, config: InstrumentConfig) -> None:
        self.config = config
        self.profile = load_profile(config.profile)
        self.settings = decode_settings(config, LineSettings)
        self._usb = UsbIdentity.parse(self.settings.usb) if self.settings.usb else None
        patterns = compile_patterns(self.profile)
        spec = self.profile.stream
        self._polls = patterns if spec is None else []
        #: Sent to switch a stream on after open, and off before close.
        self._start, self._stop = (spec.start, spec.stop) if spec is not None else ("", "")
        self._error = re.compile(self.profile.error) if self.profile.error else None
        self._no_error = re.compile(self.profile.no_error)
        # The profile's identity, then the settings' pin: the answer must match both.
        self._identity_patterns = [
            re.compile(text) for text in (self.profile.identity, self.settings.identity) if text
        ]
        self._commands = {
            c.name: (c, re.compile(c.expect), re.compile(c.reply) if c.reply else None)
            for c in self.profile.commands
        }
        self._timeout = config.reply_timeout_s or self.profile.reply_timeout_s
        self._frame_timeout = (spec.timeout_s if spec is not None else None) or self._timeout
        self._transport: asyncio.WriteTransport | None = None
        self._receiver: LineReceiver | None = None
        #: Set by the agent while a raw transcript of this port runs: every
        #: chunk written and read goes to it as it passes.
        self.transcript: ByteTap | None = None
        self._waiter: _Waiter | None = None
        self._identity: str | None = None
        #: The device the port was opened on last (a by-id link or USB ids resolved).
        self.device = ""
        self._opened = False
        #: A streaming instrument's lines between reads (None for one that is asked).
        self.stream = (
            StreamLines(patterns[0][1], self._is_known_error) if spec is not None else None
        )

    @property
    def identity(self) -> str | None:
        """What the identify probe answered at the latest open, even if it was refused.

        None before the first probe, when it got no answer, and for a profile
        without `identify`.
        """
        return self._identity

    @staticmethod
    def check_config(config: InstrumentConfig) -> None:
        """Raise ValueError if the port, the profile or a setting is missing or wrong."""
        if not config.profile:
            raise ValueError(
                f"the serial_line driver needs a profile; built in: {', '.join(builtin_profiles())}"
            )
        profile = load_profile(config.profile)
        settings = decode_settings(config, LineSettings)
        if config.port and settings.usb:
            raise _KeyedError("settings.usb", "give either port or settings.usb, not both")
        if not config.port and not settings.usb:
            raise _KeyedError(
                "port",
                'the serial_line driver needs a port such as "/dev/serial/by-id/..." or'
                ' "/dev/ttyUSB0", or settings.usb = "VID:PID[:SERIAL]" (see kmz ports)',
            )
        if settings.usb:
            try:
                UsbIdentity.parse(settings.usb)
            except ValueError as exc:
                raise _KeyedError("settings.usb", str(exc)) from None
        if settings.identity:
            if not profile.identify:
                raise _KeyedError(
                    "settings.identity", f"profile {profile.name!r} has no identify query to check"
                )
            try:
                re.compile(settings.identity)
            except re.error as exc:
                raise _KeyedError("settings.identity", f"bad regular expression: {exc}") from None
        if settings.stopbits not in (None, 1, 1.5, 2):
            raise _KeyedError(
                "settings.stopbits", f"expected 1, 1.5 or 2, got {settings.stopbits!r}"
            )
        if profile.stopbits not in (1, 1.5, 2):
            raise ValueError(f"profile {config.profile!r}: stopbits must be 1, 1.5 or 2")

    def info(self) -> InstrumentInfo:
        """Channels and commands as declared by the profile."""
        return declared_info(self.config, self.profile)

    # --- open and close ------------------------------------------------------

    @property
    def _port_name(self) -> str:
        return self.config.port or f"USB adapter {self._usb}"

    def _find_device(self) -> str:
        # Looked up on every open: after a replug the adapter may be another
        # /dev/ttyUSBn. A by-id link is followed by the kernel when opened.
        if self._usb is not None:
            return find_usb_port(self._usb)
        return self.config.port

    async def open(self) -> None:
        """Open the serial port and check that the expected instrument answers on it."""
        await self.close()
        device = self._find_device()
        loop = asyncio.get_running_loop()
        receiver = LineReceiver(
            self.profile.receive_ending.encode("ascii"), self._on_line, self._on_bytes
        )
        try:
            transport, _ = await serial_asyncio_fast.create_serial_connection(
                loop,
                lambda: receiver,
                device,
                baudrate=self.config.baudrate or self.profile.baudrate,
                bytesize=self.settings.bytesize or self.profile.bytesize,
                parity=self.settings.parity or self.profile.parity,
                stopbits=self.settings.stopbits or self.profile.stopbits,
                xonxoff=self.settings.flow == "xonxoff",
                rtscts=self.settings.flow == "rtscts",
                dsrdtr=self.settings.flow == "dsrdtr",
            )
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            # termios.error: the device refuses the frame (a pty and 7-bit
            # parity, say); it is no OSError, and must not escape as a bug.
            reason = _reason(exc)
            if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
                reason += " (is it plugged in?)"  # udev removes a by-id link with its adapter
            raise PortError(f"cannot open {self._describe(device)}: {reason}") from None
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport, self._receiver, self.device = transport, receiver, device
        if self.stream is not None:
            self.stream.reset()
        try:
            with contextlib.suppress(serial.SerialException, OSError, termios.error):
                # What waited in the adapter's buffer is from before us: stale answers, old frames.
                port = getattr(transport, "serial", None)
                if isinstance(port, serial.Serial):
                    port.reset_input_buffer()
            receiver.discard_partial()
            await self._identify()
            if self.stream is not None:
                self.stream.reset()  # a frame cut by the open, the probe's answer: no reading
            if self._start:
                self._send(self._start)
            self._opened = True
        except BaseException:
            await self.close()  # half open is not open: the next open starts clean
            raise

    def _describe(self, device: str) -> str:
        if device == self._port_name:
            return device
        return f"{self._port_name} ({device})"

    async def _identify(self) -> None:
        # A port path names a socket, not an instrument: after a replug
        # (or a swapped cable) something else may answer there, and its
        # readings must not be delivered under this instrument's id.
        query = self.profile.identify
        if not query:
            return
        self._identity = None
        patterns, port = self._identity_patterns, self._port_name
        accepts: Callable[[str], bool] = _any_line
        if self.stream is not None:
            # Frames may be flowing already (an instrument streaming since
            # before we came): the answer is the line that matches, or else
            # the first that is no frame.
            accepts = self._is_identity_answer
        if self.stream is not None:
            self.stream.last_other = ""
        try:
            answer = await self._exchange(query, self._timeout, accepts)
        except NoAnswer:
            other = self.stream.last_other if self.stream is not None else ""
            if not (other and patterns):
                raise PortError(
                    f"{port}: the instrument did not answer the identify query {query!r}"
                    f" within {self._timeout:g} s"
                ) from None
            answer = other  # what answered, though not as expected
        self._identity = answer
        for pattern in patterns:
            if pattern.search(answer) is None:
                raise PortError(
                    f"{port}: wrong instrument: {query} answered {answer!r},"
                    f" expected {pattern.pattern!r}"
                )

    def _is_identity_answer(self, line: str) -> bool:
        if self._identity_patterns:
            # The first pattern picks the answer; all of them then judge it.
            return self._identity_patterns[0].search(line) is not None
        assert self.stream is not None
        return bool(line) and not self.stream.is_frame(line)

    async def close(self) -> None:
        """Close the serial port (switching a stream off first); idempotent."""
        transport, receiver, opened = self._transport, self._receiver, self._opened
        self._transport = self._receiver = None
        self._opened = False
        if transport is None or receiver is None:
            return
        # Only to the instrument we opened: a refused one is not sent commands.
        if opened and self._stop and receiver.lost is None:
            # close() lets buffered writes leave first, so the stop command goes out.
            self._write(transport, (self._stop + self.profile.line_ending).encode("ascii"))
        transport.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(receiver.closed.wait(), 1.0)

    # --- reading ---------------------------------------------------------------

    async def read(self) -> dict[str, Value]:
        """One reading: the poll's answers, or the newest streamed frame."""
        if self.stream is not None:
            return await self._read_stream(self.stream)
        values: dict[str, Value] = {}
        for query, pattern in self._polls:
            answer = await self._query(query, self._timeout)
            try:
                got = pattern.values(answer)
            except ValueError as exc:
                raise InstrumentError(f"answer to {query!r} was {answer!r}: {exc}") from None
            if got is None:
                await self._raise_unexpected(query, answer)
            values.update(got)
        return values

    async def _read_stream(self, stream: StreamLines) -> dict[str, Value]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._frame_timeout
        while True:
            newest = stream.take()
            if newest is not None:
                if newest[0] == "frame":
                    return newest[1]
                self._raise_instrument_error(newest[1], "unexpected line in the stream")
            receiver = self._check_open()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await stream.wait(remaining, receiver.closed)
        skipped, stream.skipped_since_taken = stream.skipped_since_taken, 0
        if skipped:
            raise InstrumentError(
                f"no frame within {self._frame_timeout:g} s: {skipped} line(s) did not match"
                f" the stream pattern, the last {stream.last_other!r}"
            )
        if self._start:
            self._send(self._start)  # switched off and on, it forgot: ask again
        raise NoAnswer(f"no frame within {self._frame_timeout:g} s")

    def _on_line(self, line: str) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.future.done() and waiter.accepts(line):
            waiter.future.set_result(line)
        elif self.stream is not None:
            self.stream.add(line)
        # Else asked, and nobody asked: a late answer to an exchange that gave up.

    # --- commands --------------------------------------------------------------

    async def execute(self, name: str, args: dict[str, Any]) -> Any:
        """Send a command and check its answer; the result is the answer's named groups."""
        command, expect, reply = self._commands[name]
        try:
            line = command.send.format(**args)
        except (KeyError, ValueError, IndexError) as exc:
            raise InstrumentError(f"cannot format {command.send!r} with {args}: {exc}") from None
        timeout_s = command.timeout_s or self._timeout
        if not command.expect:
            # An SCPI setting answers nothing; its error queue says whether it was taken.
            self._check_open()
            self._send(line)
            await self._check_error_queue(line)
            return dict(args)
        accepts: Callable[[str], bool] = _any_line
        if self.stream is not None:
            # Stream frames keep coming while we wait: take only this command's answer.
            accepts = self._reply_test(expect, reply)
        answer = await self._exchange(line, timeout_s, accepts)
        match = expect.match(answer)
        if match is None:
            await self._raise_unexpected(line, answer)
        result = {k: _number(v) for k, v in match.groupdict().items() if v is not None}
        return result or dict(args)

    def _reply_test(
        self, expect: re.Pattern[str], reply: re.Pattern[str] | None
    ) -> Callable[[str], bool]:
        if reply is not None:
            answers = reply
            return lambda line: answers.match(line) is not None
        return lambda line: expect.match(line) is not None or self._is_known_error(line)

    # --- exchanges -------------------------------------------------------------

    def _is_known_error(self, line: str) -> bool:
        return line in self.profile.errors or (
            self._error is not None and self._error.match(line) is not None
        )

    def _raise_instrument_error(self, answer: str, fallback: str) -> NoReturn:
        known = self.profile.errors.get(answer)
        if known is not None:
            raise InstrumentError(f"{known} (instrument answered {answer!r})")
        if self._error is not None and self._error.match(answer):
            raise InstrumentError(f"instrument answered {answer!r}")
        raise InstrumentError(f"{fallback}: {answer!r}")

    async def _raise_unexpected(self, line: str, answer: str) -> NoReturn:
        if not self._is_known_error(answer):
            error = await self._error_in_queue(quietly=True)
            if error is not None:
                raise InstrumentError(
                    f"unexpected answer to {line!r}: {answer!r};"
                    f" {self.profile.error_query} answered {error}"
                )
        self._raise_instrument_error(answer, f"unexpected answer to {line!r}")

    async def _query(self, line: str, timeout_s: float) -> str:
        try:
            return await self._exchange(line, timeout_s)
        except NoAnswer:
            # An SCPI instrument that does not know a query queues an
            # error and stays silent: say which error, if it has one.
            error = await self._error_in_queue(quietly=True)
            if error is not None:
                raise InstrumentError(f"{line!r}: instrument reported {error}") from None
            raise

    async def _check_error_queue(self, after: str) -> None:
        """InstrumentError with the instrument's own message if its error queue holds one."""
        error = await self._error_in_queue()
        if error is not None:
            raise InstrumentError(f"{after!r}: instrument reported {error}")

    async def _error_in_queue(self, *, quietly: bool = False) -> str | None:
        """The oldest error in the instrument's queue; None without one or without `error_query`.

        `quietly`: asked only for a better message, so no answer is None, not NoAnswer.
        """
        if not self.profile.error_query:
            return None
        try:
            answer = await self._exchange(self.profile.error_query, self._timeout)
        except NoAnswer:
            if quietly:
                return None
            raise
        return None if self._no_error.search(answer) else answer

    def _check_open(self) -> LineReceiver:
        transport, receiver = self._transport, self._receiver
        if transport is None or receiver is None or transport.is_closing():
            raise PortError(f"{self._port_name} is not open")
        if receiver.lost is not None:
            raise PortError(f"{self._port_name} was lost: {_reason(receiver.lost)}")
        return receiver

    def _send(self, line: str) -> None:
        self._check_open()
        assert self._transport is not None
        try:
            data = (line + self.profile.line_ending).encode("ascii")
        except UnicodeEncodeError:
            # A command's text argument ("Prüfung"): the line protocol is ASCII.
            raise InstrumentError(f"cannot send {line!r}: only ASCII goes on the line") from None
        self._write(self._transport, data)

    def _write(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        transport.write(data)
        if self.transcript is not None:
            self.transcript.tx(data)

    def _on_bytes(self, data: bytes) -> None:
        if self.transcript is not None:
            self.transcript.rx(data)

    async def _exchange(
        self, line: str, timeout_s: float, accepts: Callable[[str], bool] = _any_line
    ) -> str:
        """Send `line`; the first line `accepts` takes is the answer."""
        receiver = self._check_open()
        if self.stream is None:
            receiver.discard_partial()
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiter = _Waiter(accepts, future)
        closed = asyncio.ensure_future(receiver.closed.wait())
        try:
            self._send(line)
            done, _ = await asyncio.wait(
                (future, closed), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._waiter = None
            closed.cancel()
        if future.done():
            return future.result()
        future.cancel()
        if closed in done:
            raise PortError(f"{self._port_name} was lost: {_reason(receiver.lost)}")
        raise NoAnswer(f"no answer to {line!r} within {timeout_s:g} s")


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        # pyserial's own text repeats the path twice; the system's says what happened.
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _KeyedError(ValueError):
    """A config error about one key (the loader names it)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
