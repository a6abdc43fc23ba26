"""Roles and grants: who may watch which instrument, who may run which command.

Three roles for people and scripts, each including the one before:

- ``viewer``: list instruments, subscribe, read their logged history;
- ``operator``: also run commands and take an instrument's control lease;
- ``admin``: also users, tokens, forgetting instruments, the whole traffic log.

A grant narrows a role: `instruments` are glob patterns over instrument ids
(``kiln-*``), `commands` are command names (``tare``); ``*`` allows all. An
agent token is a fourth kind of principal: it names one agent id and the
instrument id patterns that agent may announce, and nothing else.

Checks are on canonical ids (the protocol's id rule admits one spelling per
id). A subscription pattern is allowed only if it cannot reach beyond the
grant: a literal id the grant matches, or a pattern the grant holds as such;
deciding whether one glob's matches are a subset of another's is not worth
its bugs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from ...protocol import is_literal, matches

ANY = "*"


class Role(enum.StrEnum):
    """What a principal may do; each role includes those before it."""

    AGENT = "agent"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


_RANK = {Role.AGENT: 0, Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}

#: Roles a person (or script) may hold; `agent` is for agent tokens only.
PERSON_ROLES = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on a connection, and what they may do."""

    #: The user's name, or ``agent:<id>`` for an agent token.
    name: str
    role: Role
    #: Instrument id patterns this principal may watch (drive, announce).
    instruments: tuple[str, ...] = (ANY,)
    #: Command names an operator may run.
    commands: tuple[str, ...] = (ANY,)
    #: The token it authenticated with; None when the hub runs without auth.
    token_id: str | None = None
    #: For an agent token: the only agent id it may connect as.
    agent_id: str | None = None

    def at_least(self, role: Role) -> bool:
        """Whether this principal holds `role` or a higher one (agents hold none)."""
        return self.role is not Role.AGENT and _RANK[self.role] >= _RANK[role]

    @property
    def is_admin(self) -> bool:
        """Whether this principal may administer the hub."""
        return self.role is Role.ADMIN

    def may_watch(self, instrument_id: str) -> bool:
        """Whether it may see this instrument's data, status and history."""
        return self.at_least(Role.VIEWER) and _granted(self.instruments, instrument_id)

    def may_subscribe(self, pattern: str) -> bool:
        """Whether a subscription to `pattern` stays within the grant."""
        if not self.at_least(Role.VIEWER):
            return False
        if ANY in self.instruments or pattern in self.instruments:
            return True
        return is_literal(pattern) and _granted(self.instruments, pattern)

    def may_command(self, instrument_id: str, command: str) -> bool:
        """Whether it may run `command` on this instrument."""
        return (
            self.at_least(Role.OPERATOR)
            and _granted(self.instruments, instrument_id)
            and (ANY in self.commands or command in self.commands)
        )

    def may_announce(self, agent_id: str, instrument_ids: Iterable[str]) -> str | None:
        """Why this principal may not connect as `agent_id` with these instruments, or None."""
        if self.token_id is None:
            return None  # a hub without auth: anyone may be any agent, as before
        if self.role is not Role.AGENT:
            return "an agent must authenticate with an agent token (kmz token create --agent)"
        if agent_id != self.agent_id:
            return f"this token is for agent {self.agent_id!r}, not {agent_id!r}"
        foreign = sorted(i for i in instrument_ids if not _granted(self.instruments, i))
        if foreign:
            shown = ", ".join(foreign[:10]) + (" ..." if len(foreign) > 10 else "")
            return f"agent {agent_id!r} may not announce {shown}"
        return None


def _granted(patterns: tuple[str, ...], instrument_id: str) -> bool:
    return any(p == ANY or matches(p, instrument_id) for p in patterns)


#: The principal of every peer of a hub that runs without auth (loopback only).
ANONYMOUS = Principal(name="anonymous", role=Role.ADMIN)
