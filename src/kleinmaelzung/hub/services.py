"""The hub's services bundled for the web layer, under one typed app key."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..protocol import Limits
from .acks import AckGatherer
from .auth import Authenticator
from .commands import Commands
from .config import HubConfig
from .corrections import Corrections
from .fanout import Fanout
from .fleet import Fleet
from .handlers import Handlers
from .peers import Peer
from .rates import UserRates
from .registry import Registry
from .store import Store
from .subscriptions import Subscriptions
from .traffic import TrafficLog
from .transcripts import Transcripts

_log = logging.getLogger(__name__)


class BackgroundTasks:
    """Tasks a handler starts and does not await; kept referenced, cancelled at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        """Run `coroutine` in the background; its failure is logged, not lost."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("background task failed", exc_info=task.exception())

    async def cancel_all(self) -> None:
        """Cancel what still runs and wait for it to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Hub:
    """Config and services of one running hub; each service is the only writer of its state."""

    config: HubConfig
    #: Read here (queries); written only through `traffic`.
    store: Store
    traffic: TrafficLog
    registry: Registry
    subscriptions: Subscriptions
    fanout: Fanout
    commands: Commands
    acks: AckGatherer
    handlers: Handlers
    clock: Callable[[], float]
    #: Monotonic time the hub started.
    started: float
    #: Random per hub process: names and ids stay unique across restarts.
    boot_id: str
    #: Connected peers; written only by the join and leave handlers.
    peers: set[Peer] = field(default_factory=set)
    tasks: BackgroundTasks = field(default_factory=BackgroundTasks)
    #: Who each peer is, the control leases; replaced by `auth.web.install`.
    auth: Authenticator = field(default_factory=lambda: Authenticator(None, time.time))
    client_numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    #: Approved calibrations applied to the stream; written by the calibration service.
    corrections: Corrections = field(default_factory=Corrections)
    #: Messages per second per user over all of the user's connections (`views`).
    user_rates: UserRates = field(default_factory=lambda: UserRates(Limits()))
    #: Raw serial transcripts running now (`transcripts`).
    transcripts: Transcripts = field(default_factory=Transcripts)
    #: Every agent seen and the configurations held for them (`fleet`).
    fleet: Fleet = field(default_factory=Fleet)


HUB_KEY = web.AppKey("hub", Hub)
