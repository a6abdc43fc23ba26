"""Named limits and timeouts, with defaults; passed in, never global."""

from __future__ import annotations

import msgspec


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Sizes that bound memory per connection and per message."""

    max_message_bytes: int = 1 << 20
    #: What the hub sends at most in one frame (an instrument list, a
    #: subscribed answer); peers accept up to this from the hub.
    max_hub_message_bytes: int = 16 << 20
    max_samples_per_data: int = 1000
    max_subscriptions: int = 1024
    max_pending_commands: int = 64
    #: Frames queued for one slow client before the oldest data is dropped.
    client_queue_frames: int = 1024


class Timeouts(msgspec.Struct, frozen=True, kw_only=True):
    """Deadlines, all in seconds."""

    handshake_s: float = 10.0
    heartbeat_s: float = 10.0
    command_default_s: float = 5.0
    command_max_s: float = 300.0
    #: Longest wait between reconnect attempts of an agent or client.
    reconnect_max_s: float = 30.0
