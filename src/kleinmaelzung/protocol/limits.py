"""Named limits and timeouts, with defaults; passed in, never global."""

from __future__ import annotations

import msgspec


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Sizes that bound memory per connection and per message."""

    max_message_bytes: int = 1 << 20
    #: What the hub sends at most in one frame (an instrument list, a
    #: subscribed answer); peers accept up to this from the hub.
    max_hub_message_bytes: int = 16 << 20
    max_samples_per_data: int = 1000
    #: Deepest nesting of arrays and objects in a command's `args` or a
    #: reply's `result` (the only free-form JSON); deeper frames are refused
    #: with `nesting_too_deep`, and so is JSON too deep to parse at all.
    max_nesting_depth: int = 32
    #: Patterns active at once on one client connection (`too_many_subscriptions`).
    max_subscriptions: int = 256
    max_pending_commands: int = 64
    #: Instruments one agent may announce in its hello (`too_many_instruments`).
    max_instruments_per_agent: int = 1000
    #: Instruments all connected agents may serve together; a hello beyond
    #: it is refused the same way.
    max_instruments: int = 20_000
    #: Instruments the hub keeps knowing while no agent serves them; beyond
    #: this the ones never seen with data go first, then the longest silent.
    max_remembered_instruments: int = 10_000
    #: Messages per second a client may send, on average (`rate_limited`);
    #: up to `client_burst_messages` at once. Agents are paced by the log's
    #: backpressure instead (their backlog must flow as fast as it commits).
    client_messages_per_s: float = 200.0
    client_burst_messages: int = 400
    #: Seconds over the rate (every message refused) before the hub closes.
    rate_limited_close_s: float = 5.0
    #: Messages per second all connections of one user may send together, on
    #: average and in a burst (`rate_limited`): a user cannot multiply the
    #: client rate by opening connections (`hub.rates`).
    user_messages_per_s: float = 400.0
    user_burst_messages: int = 800
    #: TCP connections the hub holds at once, in total and per peer address;
    #: beyond either a new one is answered 503 and closed at once. The total
    #: is also kept below the process's open-file limit (see `hub.admission`).
    #: Loopback peers count in the total only: they are this machine's
    #: dashboard, demo and benchmarks, never a remote attacker.
    max_connections: int = 10_000
    max_connections_per_address: int = 1000
    #: Entries `GET /api/log` returns at most per request (and within
    #: `max_message_bytes`: the hub answers as it asks peers to send).
    max_log_entries: int = 10_000
    #: Frames queued for one slow client before the oldest data is dropped.
    client_queue_frames: int = 1024


class Timeouts(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Deadlines, all in seconds."""

    handshake_s: float = 10.0
    #: An HTTP connection that has not sent a complete request (idle, or
    #: headers trickling in: slowloris) is closed this long after it opened,
    #: and an idle keep-alive connection this long after its last answer.
    http_idle_s: float = 15.0
    #: How long a closing WebSocket waits for the peer's close frame.
    close_s: float = 2.0
    #: A link that passes no byte (a black hole: the socket stays open) is
    #: noticed by both ends within this many seconds (see `ping_after_s`).
    heartbeat_s: float = 10.0
    command_default_s: float = 5.0
    command_max_s: float = 300.0
    #: Longest wait between reconnect attempts of an agent or client.
    reconnect_max_s: float = 30.0

    @property
    def ping_after_s(self) -> float:
        """aiohttp's `heartbeat`: seconds of silence before a ping, so that a dead link is
        noticed within `heartbeat_s`.

        aiohttp pings after `heartbeat` seconds without a frame, then waits
        `heartbeat / 2` for the pong, each timer rounded up to a whole second:
        up to `1.5 * heartbeat + 2` in all. Passing `heartbeat_s` itself took
        15.7 s to notice a black hole (tests/e2e/test_delivery_blackhole.py).
        """
        return max(1.0, (self.heartbeat_s - 2.0) / 1.5)
