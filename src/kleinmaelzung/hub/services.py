"""The hub's services bundled for the web layer, under one typed app key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from .config import HubConfig
from .peers import Peer
from .registry import Registry
from .router import Router
from .store import Store


@dataclass
class Hub:
    """Config and services of one running hub."""

    config: HubConfig
    store: Store
    registry: Registry
    router: Router
    clock: Callable[[], float]
    started: float
    peers: set[Peer] = field(default_factory=set)


HUB_KEY = web.AppKey("hub", Hub)
