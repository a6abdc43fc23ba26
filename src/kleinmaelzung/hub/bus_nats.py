"""The `Bus` over NATS (nats-py, extra ``kleinmaelzung[nats]``): hubs on several machines.

Imported only when the hub config sets ``bus = "nats://..."``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .bus import BusError, OnMessage, Responder, Unsubscribe

_log = logging.getLogger(__name__)

#: Messages queued for NATS while the bus is slower than the hub, at most;
#: beyond, the newest are dropped and counted (`NatsBus.dropped`). NATS is
#: at-most-once: a subscriber that misses data recovers it from the log.
MAX_OUTBOX = 10_000
#: Seconds for the first connection to the NATS server.
CONNECT_TIMEOUT_S = 2.0


class NatsBus:
    """A `Bus` on one NATS connection, with no echo (a hub never hears itself)."""

    def __init__(self, client: Any) -> None:
        self._nc = client
        self._outbox: list[tuple[str, bytes]] = []
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sender = asyncio.create_task(self._send_forever(), name="kmz-bus-send")
        #: Messages not published: the outbox was full, or NATS refused them.
        self.dropped = 0

    def publish(self, subject: str, payload: bytes) -> None:
        """Queue one message for the sender task (sent in this loop iteration's batch)."""
        outbox = self._outbox
        if len(outbox) >= MAX_OUTBOX:
            self.dropped += 1
            return
        outbox.append((subject, payload))
        if len(outbox) == 1:
            self._wake.set()

    async def _send_forever(self) -> None:
        # nats-py's publish is a coroutine that, in the common case, only
        # appends to its write buffer: one task awaits them in batches, so
        # that the forwarding path calls a plain function per frame.
        nats_errors = _nats_errors()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._outbox = self._outbox, []
            for subject, payload in batch:
                try:
                    await self._nc.publish(subject, payload)
                except nats_errors as exc:
                    self.dropped += 1
                    _log.debug("not published", extra={"subject": subject, "error": repr(exc)})

    async def subscribe(self, subject: str, on_message: OnMessage) -> Unsubscribe:
        """Receive what other hubs publish on `subject`."""

        async def received(msg: Any) -> None:
            on_message(msg.subject, msg.data)

        subscription = await self._nc.subscribe(subject, cb=received)

        async def unsubscribe() -> None:
            try:
                await subscription.unsubscribe()
            except _nats_errors():
                pass  # the connection is gone: so is the subscription

        return unsubscribe

    async def serve(self, subject: str, respond: Responder) -> None:
        """Answer requests to `subject`, each in a task of its own (commands take seconds)."""

        async def answer(msg: Any) -> None:
            try:
                reply = await respond(msg.data)
                await msg.respond(reply)
            except _nats_errors() as exc:
                _log.warning("request not answered", extra={"subject": subject, "error": repr(exc)})

        async def received(msg: Any) -> None:
            task = asyncio.create_task(answer(msg), name="kmz-bus-request")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        await self._nc.subscribe(subject, cb=received)

    async def request(self, subject: str, payload: bytes, timeout_s: float) -> bytes | None:
        """Ask whoever serves `subject`; None if nobody does."""
        import nats.errors

        try:
            msg = await self._nc.request(subject, payload, timeout=timeout_s)
        except nats.errors.NoRespondersError:
            return None
        except nats.errors.TimeoutError:
            raise TimeoutError(f"no answer on {subject} within {timeout_s} s") from None
        data: bytes = msg.data
        return data

    async def close(self) -> None:
        """Send what is queued, then close the connection."""
        self._wake.set()
        await asyncio.sleep(0)  # let the sender take the last batch
        self._sender.cancel()
        for task in list(self._tasks):
            task.cancel()
        try:
            await self._nc.flush(timeout=1)
        except _nats_errors():
            pass
        await self._nc.close()


def _nats_errors() -> tuple[type[Exception], ...]:
    """nats-py's errors, and the socket's and the clock's it lets through."""
    import nats.errors

    return (nats.errors.Error, OSError, TimeoutError)


async def connect_nats(url: str) -> NatsBus:
    """Connect to the NATS server at `url`; raises `BusError` if it cannot."""
    try:
        import nats
    except ImportError:
        raise BusError("bus: a NATS bus needs nats-py: pip install 'kleinmaelzung[nats]'") from None

    last_error: list[Exception] = []

    async def error(exc: Exception) -> None:
        last_error[:] = [exc]
        _log.warning("bus error", extra={"error": repr(exc)})

    async def disconnected() -> None:
        _log.warning("bus disconnected; reconnecting", extra={"url": url})

    async def reconnected() -> None:
        _log.info("bus reconnected", extra={"url": url})

    try:
        # Bounded: with reconnects unlimited (what a running hub wants),
        # nats-py retries the first connection forever too.
        connecting = nats.connect(
            servers=[url],
            name="kmz-hub",
            no_echo=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=error,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
        )
        client = await asyncio.wait_for(connecting, CONNECT_TIMEOUT_S * 2)
    except _nats_errors() as exc:
        why = last_error[0] if isinstance(exc, TimeoutError) and last_error else exc
        raise BusError(
            f"bus: cannot reach the NATS server at {url} within {CONNECT_TIMEOUT_S * 2:g} s: {why}"
        ) from None
    return NatsBus(client)
