"""What feeding the log's writer process costs the hub: a pipe or a shared-memory ring.

    python benchmarks/writer_feed.py [--records 200000] [--per-tick 1,10,100]

The hub gathers the records of one loop iteration ("tick"), encodes them
once (msgpack) and hands the bytes to the writer process. Two ways to hand
them over are timed on the hub's side (its CPU seconds per record; the
consumer process is not counted):

- pipe: one os.write() per tick into a pipe of 1 MiB (F_SETPIPE_SZ);
- ring: the bytes copied into a shared-memory ring (8 MiB), its head moved,
  and the consumer woken with one eventfd write per tick (it has to be woken
  somehow, or poll, which would take the shared core).

Both make one system call per tick; the difference is the kernel's copy into
the pipe against Python's copy into the ring.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import os
import struct
import time
from multiprocessing import shared_memory

import msgspec

from kleinmaelzung.hub.store import Record

RING_BYTES = 8 * 1024 * 1024
HEADER = 16  # head (written by the producer), tail (by the consumer): 8 bytes each
F_SETPIPE_SZ = 1031


def records(count: int) -> list[Record]:
    """S1-shaped data records, one sample each."""
    frame = (
        b'{"type":"data","samples":[{"instrument":"pub-1","seq":1234,'
        b'"ts":1700000000.123,"values":{"value":1.5,"ok":true}}]}'
    )
    return [
        Record(
            1.7e9 + i,
            "in",
            "agent-1",
            "data",
            frame,
            "pub-1",
            "client-1/a,client-2/b",
            ("agent-1/r1", {"pub-1": i}),
            "r1",
        )
        for i in range(count)
    ]


def _drain_pipe(fd: int, write_fd: int) -> None:
    os.close(write_fd)  # inherited: the end of input needs the producer's to be the last
    while os.read(fd, 1 << 20):
        pass


def feed_pipe(batch: list[Record], per_tick: int) -> float:
    """Hub CPU seconds per record, feeding a pipe."""
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, F_SETPIPE_SZ, 1 << 20)
    consumer = multiprocessing.Process(target=_drain_pipe, args=(read_fd, write_fd))
    consumer.start()
    os.close(read_fd)
    encoder = msgspec.msgpack.Encoder()
    started = time.process_time()
    for i in range(0, len(batch), per_tick):
        payload = encoder.encode(batch[i : i + per_tick])
        view = memoryview(struct.pack("<I", len(payload)) + payload)
        while view:
            view = view[os.write(write_fd, view) :]
    took = time.process_time() - started
    os.close(write_fd)
    consumer.join()
    return took / len(batch)


def _drain_ring(name: str, wake: int) -> None:
    ring = shared_memory.SharedMemory(name)
    try:
        buffer = ring.buf
        size = RING_BYTES - HEADER
        while True:
            os.eventfd_read(wake)
            head, tail = struct.unpack_from("<qq", buffer, 0)
            if head < 0:
                return
            while tail < head:
                (length,) = struct.unpack_from("<I", buffer, HEADER + tail % size)
                tail += 4 + length  # the reader would decode bytes(...) here
            struct.pack_into("<q", buffer, 8, tail)
    finally:
        ring.close()


def feed_ring(batch: list[Record], per_tick: int) -> float:
    """Hub CPU seconds per record, feeding a shared-memory ring."""
    ring = shared_memory.SharedMemory(create=True, size=RING_BYTES)
    wake = os.eventfd(0)
    consumer = multiprocessing.Process(target=_drain_ring, args=(ring.name, wake))
    consumer.start()
    buffer = ring.buf
    size = RING_BYTES - HEADER
    head = 0
    encoder = msgspec.msgpack.Encoder()
    started = time.process_time()
    for i in range(0, len(batch), per_tick):
        body = encoder.encode(batch[i : i + per_tick])
        payload = struct.pack("<I", len(body)) + body
        while head + len(payload) - struct.unpack_from("<q", buffer, 8)[0] > size:
            os.sched_yield()  # full: the consumer is behind
        start = head % size
        first = min(len(payload), size - start)
        buffer[HEADER + start : HEADER + start + first] = payload[:first]
        if first < len(payload):
            buffer[HEADER : HEADER + len(payload) - first] = payload[first:]
        head += len(payload)
        struct.pack_into("<q", buffer, 0, head)
        os.eventfd_write(wake, 1)
    took = time.process_time() - started
    while struct.unpack_from("<q", buffer, 8)[0] < head:
        os.sched_yield()
    struct.pack_into("<q", buffer, 0, -1)
    os.eventfd_write(wake, 1)
    consumer.join()
    del buffer
    ring.close()
    ring.unlink()
    return took / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--per-tick", default="1,10,100")
    args = parser.parse_args()
    batch = records(args.records)
    results = {}
    for per_tick in (int(n) for n in args.per_tick.split(",")):
        results[per_tick] = {
            "pipe_us_per_record": round(feed_pipe(batch, per_tick) * 1e6, 3),
            "ring_us_per_record": round(feed_ring(batch, per_tick) * 1e6, 3),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
