"""Buses: one worker per physical line, so instruments that share it take turns.

Several Modbus slaves on one RS-485 port, or several sensors on one I2C bus,
must never talk at once; instruments on different buses never wait for each
other. A blocking library (smbus2, PyVISA) runs in the bus's own thread,
never on the event loop: one thread per bus, so a library that is not
thread-safe sees one thread only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Bus:
    """One physical line: a lock for its exchanges and a thread for blocking calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: Held for each exchange (open, read, command, close) on this bus.
        self.lock = asyncio.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def run_blocking(self, function: Callable[[], T]) -> T:
        """Run a blocking call in this bus's thread (created on first use)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"kmz-bus-{self.name}"
            )
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    def close(self) -> None:
        """Stop the bus's thread once its last call has returned."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def __repr__(self) -> str:
        return f"<Bus {self.name}>"


class Buses:
    """The buses of one agent, by name."""

    def __init__(self) -> None:
        self._buses: dict[str, Bus] = {}

    def get(self, name: str) -> Bus:
        """The bus called `name`, created on first use."""
        bus = self._buses.get(name)
        if bus is None:
            bus = self._buses[name] = Bus(name)
        return bus

    def close(self) -> None:
        """Stop every bus thread."""
        for bus in self._buses.values():
            bus.close()
