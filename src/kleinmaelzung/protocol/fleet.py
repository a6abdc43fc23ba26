"""The HTTP API's types for configuration held at the hub (`kmz agent-config`).

The wire messages between hub and agent are in `messages` (`ConfigPush`,
`ConfigResult`, `AgentInfo`); these are what an admin's tool sends and gets.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .messages import ErrorInfo, InstrumentOutcome


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base: immutable, and strict about unknown fields so typos surface."""


class RevisionInfo(_Struct, frozen=True):
    """One configuration revision the hub holds for an agent."""

    revision: int
    #: Hub time it was sent (or first reported, for one the agent brought).
    ts: float
    #: Who made it: a user's name, or ``agent`` for its own file.
    by: str
    #: The file name it came from.
    source: str


class AgentConfigView(_Struct, frozen=True):
    """`GET /api/agents/AGENT/config`: the configuration an agent runs, and its revisions."""

    agent: str
    #: The revision it runs (as it last said), and that configuration as TOML.
    revision: int
    config: str
    remote_config: Literal["accept", "refuse"] | None
    online: bool
    #: Held revisions, oldest first; `applied` is the order they were run in
    #: (the last is the current one; a rollback goes to the one before it).
    revisions: list[RevisionInfo]
    applied: list[int]


class ConfigChange(_Struct, frozen=True):
    """`PUT /api/agents/AGENT/config`: run this instrument configuration."""

    #: ``[[instruments]]`` tables in TOML.
    config: Annotated[str, msgspec.Meta(max_length=262144)]
    #: The file's name, which the agent's errors name.
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "hub"


class ConfigOutcome(_Struct, frozen=True, omit_defaults=True):
    """The answer to a configuration change or rollback, once the agent answered."""

    agent: str
    #: The revision sent, and the one the agent runs now (the same if `ok`).
    revision: int
    running: int
    ok: bool
    error: ErrorInfo | None = None
    instruments: list[InstrumentOutcome] = []
    #: What changed, as a unified diff of the TOML (also in the traffic log).
    diff: str = ""
