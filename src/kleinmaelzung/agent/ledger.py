"""Commands with an idempotency key: run at most once at the instrument, whoever retries.

A client that lost a reply (its connection, or the hub, went away) cannot know
whether its command ran. Sent again with the same `key`, the command is not
run again: the agent answers with the first outcome. The agent, not the hub,
keeps the ledger, because only the agent knows what reached the instrument,
and because it outlives hub restarts; it keeps it on disk, in the spool's
file, because it must outlive its own restarts too.

Each keyed command is written down, committed, *before* it may touch the
instrument, and its outcome after. So a retry finds one of:
- the outcome: it is answered with it (the command does not run again);
- the same command still running: it waits for it, and gets its outcome;
- a start without an outcome and nothing running (the agent was killed while
  the command ran): `outcome_unknown`, never a second run;
- a different command under the same key: `idempotency_conflict`.

A command that did not start (its deadline passed while the port was busy,
its connection closed, its arguments were refused) leaves no trace: a retry
may run it. Keys are kept for `KEEP_S` (a day), per instrument.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import msgspec

from ..protocol import Command, ErrorCode, ErrorInfo, Reply

#: How long a key is remembered.
KEEP_S = 24 * 3600.0
#: Outcomes that say the command never reached the instrument: its key is free.
NOT_STARTED = frozenset(
    {
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.AGENT_DISCONNECTED,
        ErrorCode.UNKNOWN_COMMAND,
        ErrorCode.INVALID_ARGUMENTS,
        ErrorCode.UNKNOWN_INSTRUMENT,
    }
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keyed_commands (
    instrument TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    started REAL NOT NULL,
    reply BLOB,
    PRIMARY KEY (instrument, key)
);
"""

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_decode_reply = msgspec.json.Decoder(Reply).decode


def fingerprint(command: Command) -> str:
    """What must match for a retry to be the same command: its name and arguments."""
    return _encode([command.name, dict(sorted(command.args.items()))]).decode()


class CommandLedger:
    """The keyed commands of one agent, on disk (`path` None: in memory, for tests)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        # Keyed commands running now: their fingerprint and outcome, by slot.
        self._running: dict[tuple[str, str], tuple[str, asyncio.Future[Reply]]] = {}

    async def open(self) -> None:
        """Open the ledger (the spool's file, which the spool has locked for this agent)."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="kmz-ledger")
        await self._call(self._open_blocking)

    async def close(self) -> None:
        """Release the file."""
        if self._executor is None:
            return
        await self._call(self._close_blocking)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def run_once(self, command: Command, run: Callable[[Command], Awaitable[Reply]]) -> Reply:
        """Run a keyed command at most once; answer a retry with the first outcome."""
        key = command.key
        assert key is not None
        slot = (command.instrument, key)
        mark = fingerprint(command)
        running = self._running.get(slot)
        if running is not None:
            running_mark, first = running
            if running_mark != mark:
                return _conflict(command, key, running_mark)
            return _as_answer_to(command, await asyncio.shield(first))
        # Taken before the first await: a retry arriving meanwhile waits for
        # this one instead of finding its start and calling it lost.
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._running[slot] = (mark, future)
        try:
            reply = await self._run_once(command, key, mark, run)
            future.set_result(reply)
            return reply
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a retry may not be waiting
            raise
        finally:
            del self._running[slot]

    async def _run_once(
        self,
        command: Command,
        key: str,
        mark: str,
        run: Callable[[Command], Awaitable[Reply]],
    ) -> Reply:
        found = await self._call(self._begin_blocking, command.instrument, key, mark, time.time())
        if found is not None:
            recorded_mark, recorded = found
            if recorded_mark != mark:
                return _conflict(command, key, recorded_mark)
            if recorded is None:
                return _error(
                    command,
                    ErrorCode.OUTCOME_UNKNOWN,
                    f"a command with key {key!r} started on {command.instrument} before the "
                    "agent restarted, and its outcome was lost; it does not run again",
                )
            return _as_answer_to(command, recorded)
        reply = await run(command)
        code = reply.error.code if reply.error is not None else None
        if code in NOT_STARTED:
            await self._call(self._release_blocking, command.instrument, key)
        else:
            await self._call(self._finish_blocking, command.instrument, key, _encode(reply))
        return reply

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        assert self._executor is not None, "ledger not open"
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # --- on the ledger's thread ---------------------------------------------------

    def _open_blocking(self) -> None:
        db = sqlite3.connect(
            ":memory:" if self.path is None else str(self.path),
            isolation_level=None,
            check_same_thread=False,
            timeout=10.0,  # the spool's commits are short
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        db.execute("DELETE FROM keyed_commands WHERE started < ?", (time.time() - KEEP_S,))
        self._db = db

    def _close_blocking(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _begin_blocking(
        self, instrument: str, key: str, mark: str, now: float
    ) -> tuple[str, Reply | None] | None:
        db = self._db
        assert db is not None
        row = db.execute(
            "SELECT fingerprint, reply FROM keyed_commands WHERE instrument = ? AND key = ?",
            (instrument, key),
        ).fetchone()
        if row is not None:
            recorded, reply = row
            return recorded, (_decode_reply(reply) if reply is not None else None)
        # Committed (and synced) before the command may touch the instrument.
        db.execute(
            "INSERT INTO keyed_commands (instrument, key, fingerprint, started)"
            " VALUES (?, ?, ?, ?)",
            (instrument, key, mark, now),
        )
        return None

    def _finish_blocking(self, instrument: str, key: str, reply: bytes) -> None:
        assert self._db is not None
        self._db.execute(
            "UPDATE keyed_commands SET reply = ? WHERE instrument = ? AND key = ?",
            (reply, instrument, key),
        )

    def _release_blocking(self, instrument: str, key: str) -> None:
        assert self._db is not None
        self._db.execute(
            "DELETE FROM keyed_commands WHERE instrument = ? AND key = ?", (instrument, key)
        )


def _as_answer_to(command: Command, reply: Reply) -> Reply:
    return msgspec.structs.replace(reply, id=command.id)


def _conflict(command: Command, key: str, recorded: str) -> Reply:
    return _error(
        command,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        f"key {key!r} was used for another command on {command.instrument} ({recorded}); "
        "use a new key for a new command",
    )


def _error(command: Command, code: ErrorCode, message: str) -> Reply:
    return Reply(id=command.id, ok=False, error=ErrorInfo(code=code, message=message))
