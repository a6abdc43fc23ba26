"""The instrument configuration an admin sent from the hub, kept on the Pi's disk.

The agent writes each revision it accepts before it runs it, so that after a
power cut, with the hub away, it comes back with the configuration it last
ran. Its own file wins in two cases: it says ``remote_config = "refuse"``, or
someone edited its ``[[instruments]]`` since the revision was applied (the
newer decision, taken at the Pi).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import msgspec

from .config import AgentConfig, InstrumentConfig, parse_remote_config
from .errors import ConfigError
from .spool import default_spool_path

_log = logging.getLogger(__name__)

Change = Literal["added", "removed", "changed", "unchanged"]


class AppliedRevision(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A revision from the hub as kept on disk."""

    revision: int
    #: The ``[[instruments]]`` tables, as the hub sent them.
    config: str
    #: `instruments_digest` of the agent's own file when it was applied.
    local_digest: str
    source: str = "hub"


def instruments_digest(instruments: Sequence[InstrumentConfig]) -> str:
    """A fingerprint of instrument tables: changes when anyone edits them."""
    return hashlib.sha256(msgspec.json.encode(list(instruments))).hexdigest()


def revision_path(config: AgentConfig) -> Path:
    """Beside the spool: `config-AGENT.json` in the spool's directory."""
    spool = Path(config.spool.path) if config.spool.path else default_spool_path(config.agent_id)
    return spool.with_name(f"config-{config.agent_id}.json")


class RevisionFile:
    """The last applied revision on disk, written so that a power cut leaves the old or the new."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> AppliedRevision | None:
        """The revision kept, or None (none, or unreadable: logged)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            _log.error(
                "cannot read the kept configuration",
                extra={"path": str(self.path), "error": str(exc)},
            )
            return None
        try:
            return msgspec.json.decode(data, type=AppliedRevision)
        except msgspec.DecodeError as exc:
            _log.error(
                "kept configuration unreadable; the agent's own file is used",
                extra={"path": str(self.path), "error": str(exc)},
            )
            return None

    def save(self, applied: AppliedRevision) -> None:
        """Write it: a temporary file, synced, renamed over the old one; raise OSError."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as file:
            file.write(msgspec.json.encode(applied))
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself must survive the power cut
        finally:
            os.close(directory)


def effective_config(config: AgentConfig, kept: RevisionFile) -> tuple[AgentConfig, int]:
    """The configuration to start with and its revision (0: the agent's own file)."""
    if config.remote_config == "refuse":
        return config, 0
    applied = kept.load()
    if applied is None:
        return config, 0
    if applied.local_digest != instruments_digest(config.instruments):
        _log.warning(
            "the agent's own file changed since the hub's revision was applied: the file wins",
            extra={"revision": applied.revision, "path": str(kept.path)},
        )
        return config, 0
    try:
        remote = parse_remote_config(
            applied.config, config, source=f"{kept.path} (revision {applied.revision})"
        )
    except ConfigError as exc:
        # Checked when it was applied: a driver uninstalled since, say.
        _log.error(
            "kept configuration no longer valid; the agent's own file is used",
            extra={"error": str(exc)},
        )
        return config, 0
    _log.info(
        "running the configuration kept from the hub",
        extra={"revision": applied.revision, "path": str(kept.path)},
    )
    return remote, applied.revision


def changes(old: Sequence[InstrumentConfig], new: Sequence[InstrumentConfig]) -> dict[str, Change]:
    """What a change of configuration does to each instrument, by id."""
    before = {i.id: i for i in old}
    after = {i.id: i for i in new}
    result: dict[str, Change] = {}
    for instrument_id in before.keys() | after.keys():
        if instrument_id not in after:
            result[instrument_id] = "removed"
        elif instrument_id not in before:
            result[instrument_id] = "added"
        else:
            same = before[instrument_id] == after[instrument_id]
            result[instrument_id] = "unchanged" if same else "changed"
    return result


def only_poll_changed(old: InstrumentConfig, new: InstrumentConfig) -> bool:
    """Whether the runner can take `new` with its port open: poll interval or description."""
    return (
        msgspec.structs.replace(
            new, poll_interval_s=old.poll_interval_s, description=old.description
        )
        == old
    )
