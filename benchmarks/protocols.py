"""What the load generator says to each server: the hub's JSON, MQTT over WS, NATS over WS.

A protocol builds publish payloads and parses what subscribers receive into
(send time in ns, seq, publisher index) triples. Publish payloads are ~100
bytes in every protocol.
"""

from __future__ import annotations

import secrets
import struct
import time
from typing import Any

import msgspec

from kleinmaelzung.protocol import PROTOCOL_VERSION

_RUN = f"bench-{secrets.token_hex(6)}"

_PAYLOAD = struct.Struct("<qqi")  # send time ns, seq, publisher
_PAD = b"\0" * (100 - _PAYLOAD.size)


class Protocol:
    """One side of one connection; subclasses fill in the wire details."""

    name = ""
    text = True
    subprotocol: str | None = None
    path = "/"

    def __init__(self, role: str, index: int, *, topic: str = "*", batch: int = 1) -> None:
        self.role = role  # "pub" or "sub"
        self.index = index
        self.topic = topic
        self.batch = batch
        self.ready = False
        self.replies: list[bytes] = []  # control frames to send back (pongs)

    def hello(self) -> list[bytes]:
        """Frames to send right after connecting."""
        return []

    def publish(self, seq: int) -> bytes:
        """One frame carrying samples seq .. seq + batch - 1."""
        raise NotImplementedError

    def feed(self, data: bytes) -> list[tuple[int, int, int]]:
        """A received frame → [(send time ns, seq, publisher)], and sets `ready`."""
        raise NotImplementedError


# --- the Kleinmaelzung hub ---------------------------------------------------------


class _HubSample(msgspec.Struct):
    instrument: str
    seq: int
    ts: float


class _HubFrame(msgspec.Struct):
    type: str
    samples: list[_HubSample] = []


_hub_decoder = msgspec.json.Decoder(_HubFrame)


class Hub(Protocol):
    """Publishers are agents (one instrument each), subscribers are clients."""

    name = "hub"

    def __init__(self, role: str, index: int, **kw: Any) -> None:
        super().__init__(role, index, **kw)
        self.path = "/ws/agent" if role == "pub" else "/ws/client"
        self.instrument = f"i{index}"
        self._prefix = b'{"instrument":"%s","seq":' % self.instrument.encode()

    def hello(self) -> list[bytes]:
        if self.role == "pub":
            hello = {
                "type": "agent_hello",
                "protocol": PROTOCOL_VERSION,
                "agent_id": f"bench-{self.index}",
                # A run of its own per load generator: a log that outlives a
                # run would otherwise take its samples for ones it logged.
                "run": _RUN,
                "instruments": [{"id": self.instrument, "kind": "bench"}],
            }
            return [msgspec.json.encode(hello)]
        return [
            b'{"type":"client_hello","protocol":%d,"name":"bench"}' % PROTOCOL_VERSION,
            msgspec.json.encode({"type": "subscribe", "id": "1", "patterns": [self.topic]}),
        ]

    def publish(self, seq: int) -> bytes:
        ts = repr(time.time()).encode()
        samples = b",".join(
            self._prefix + b'%d,"ts":%s,"values":{"v":1.5,"w":20.25}}' % (s, ts)
            for s in range(seq, seq + self.batch)
        )
        return b'{"type":"data","samples":[' + samples + b"]}"

    def feed(self, data: bytes) -> list[tuple[int, int, int]]:
        frame = _hub_decoder.decode(data)
        if frame.type == "data":
            return [(int(s.ts * 1e9), s.seq, int(s.instrument[1:])) for s in frame.samples]
        ready_on = "welcome" if self.role == "pub" else "subscribed"
        if frame.type == ready_on:
            self.ready = True
        return []


# --- MQTT 3.1.1 over WebSocket (Mosquitto) -------------------------------------------


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


class Mqtt(Protocol):
    """QoS 0 publish to b/<index>; subscribers take b/#."""

    name = "mqtt"
    text = False
    subprotocol = "mqtt"
    path = "/mqtt"

    def __init__(self, role: str, index: int, **kw: Any) -> None:
        super().__init__(role, index, **kw)
        self._buffer = bytearray()
        topic = _mqtt_string(f"b/{index}")
        self._publish_head = b"\x30" + _remaining(len(topic) + 100) + topic

    def hello(self) -> list[bytes]:
        variable = _mqtt_string("MQTT") + b"\x04\x02\x00\x3c"
        payload = _mqtt_string(f"{self.role}{self.index}")
        connect = b"\x10" + _remaining(len(variable) + len(payload)) + variable + payload
        frames = [connect]
        if self.role == "sub":
            body = b"\x00\x01" + _mqtt_string("b/#" if self.topic == "*" else f"b/{self.topic}")
            frames.append(b"\x82" + _remaining(len(body) + 1) + body + b"\x00")
        return frames

    def publish(self, seq: int) -> bytes:
        return self._publish_head + _PAYLOAD.pack(time.time_ns(), seq, self.index) + _PAD

    def feed(self, data: bytes) -> list[tuple[int, int, int]]:
        self._buffer += data
        out = []
        buffer = self._buffer
        while len(buffer) >= 2:
            length, multiplier, position = 0, 1, 1
            while True:
                if position >= len(buffer):
                    return out
                byte = buffer[position]
                length += (byte & 0x7F) * multiplier
                multiplier *= 128
                position += 1
                if not byte & 0x80:
                    break
            end = position + length
            if end > len(buffer):
                break
            kind = buffer[0] >> 4
            if kind == 3:
                topic_length = struct.unpack_from(">H", buffer, position)[0]
                ts, seq, pub = _PAYLOAD.unpack_from(buffer, position + 2 + topic_length)
                out.append((ts, seq, pub))
            elif (kind == 2 and self.role == "pub") or kind == 9:
                self.ready = True
            del buffer[:end]
        return out


# --- NATS over WebSocket ---------------------------------------------------------------


class Nats(Protocol):
    """PUB b.<index>; subscribers take b.>."""

    name = "nats"
    text = False

    def __init__(self, role: str, index: int, **kw: Any) -> None:
        super().__init__(role, index, **kw)
        self._buffer = bytearray()
        self._publish_head = b"PUB b.%d 100\r\n" % index

    def hello(self) -> list[bytes]:
        frames = [b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\n']
        if self.role == "sub":
            subject = "b.>" if self.topic == "*" else f"b.{self.topic}"
            frames.append(b"SUB %s 1\r\n" % subject.encode())
        frames.append(b"PING\r\n")
        return frames

    def publish(self, seq: int) -> bytes:
        payload = _PAYLOAD.pack(time.time_ns(), seq, self.index) + _PAD
        return self._publish_head + payload + b"\r\n"

    def feed(self, data: bytes) -> list[tuple[int, int, int]]:
        self._buffer += data
        buffer = self._buffer
        out = []
        while True:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                break
            if buffer.startswith(b"MSG "):
                size = int(buffer[buffer.rfind(b" ", 0, line_end) + 1 : line_end])
                start = line_end + 2
                if len(buffer) < start + size + 2:
                    break
                out.append(_PAYLOAD.unpack_from(buffer, start))
                del buffer[: start + size + 2]
                continue
            line = bytes(buffer[:line_end])
            del buffer[: line_end + 2]
            if line == b"PING":
                self.replies.append(b"PONG\r\n")
            elif line == b"PONG":
                self.ready = True
        return out


PROTOCOLS: dict[str, type[Protocol]] = {"hub": Hub, "mqtt": Mqtt, "nats": Nats}
