"""The hub's exception tree; errors that reach a peer are `Error` values with codes instead.

KmzError
└── HubError
    ├── HubStartError   the hub cannot listen (a busy port, an address not of this machine)
    ├── Conflict        a hello claims another connected agent's instrument (-> duplicate_id)
    └── StoreError      the traffic log cannot do what was asked
        ├── StoreClosed    used after close()
        └── WriterFailed   the writer stopped; nothing more will be committed
"""

from __future__ import annotations

from ..protocol import KmzError


class HubError(KmzError):
    """Base of the hub's exceptions."""


class HubStartError(HubError):
    """The hub could not start: the message says what and where."""


class Conflict(HubError):
    """A hello that cannot be accepted as it is: it claims another connected agent's instrument."""
