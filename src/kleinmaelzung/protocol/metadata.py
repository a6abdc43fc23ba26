"""The HTTP API's types for instrument metadata held at the hub (`kmz instrument-meta`).

The metadata itself (`InstrumentMetadata`) is in `messages`: instrument
records carry it to clients.
"""

from __future__ import annotations

import msgspec

from .messages import InstrumentMetadata, Timestamp


class MetadataView(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`GET /api/instruments/ID/metadata`: what the hub holds, and what is shown."""

    instrument: str
    #: As an admin set it at the hub (empty: nothing set yet).
    metadata: InstrumentMetadata
    #: The description the instrument's agent announces (its config file's).
    announced_description: str
    #: The description shown: the hub's once set, else the agent's.
    description: str
    #: Who changed it last, and when (hub time); None if nobody has.
    updated_by: str | None = None
    updated_at: Timestamp | None = None
