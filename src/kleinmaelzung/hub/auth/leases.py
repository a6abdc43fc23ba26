"""Control leases: while an operator holds an instrument's lease, only their commands run.

Pure: the clock is passed in. Only the hub's auth service writes the table.
A lease is held by a principal's name (a person, not a connection): the same
user on a second terminal may drive, a second user may not. It ends when its
holder releases it, when it expires, or when an admin takes it over.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A lease lasts this long unless asked otherwise, at most `MAX_LEASE_S`.
DEFAULT_LEASE_S = 300.0
MAX_LEASE_S = 8 * 3600.0


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds an instrument's lease and until when (hub time, Unix seconds)."""

    instrument: str
    holder: str
    expires: float


class Leases:
    """The lease per instrument; expired leases count as none."""

    def __init__(self) -> None:
        self._leases: dict[str, Lease] = {}

    def holder(self, instrument: str, now: float) -> Lease | None:
        """The live lease on `instrument`, if any."""
        lease = self._leases.get(instrument)
        if lease is not None and lease.expires <= now:
            del self._leases[instrument]
            return None
        return lease

    def take(
        self, instrument: str, holder: str, duration_s: float, now: float, *, force: bool = False
    ) -> Lease:
        """Take or renew the lease; return the lease that holds now.

        If someone else holds it (and not `force`), that lease is returned
        unchanged: the caller tells the asker who holds it.
        """
        current = self.holder(instrument, now)
        if current is not None and current.holder != holder and not force:
            return current
        lease = Lease(instrument, holder, now + min(max(duration_s, 1.0), MAX_LEASE_S))
        self._leases[instrument] = lease
        return lease

    def release(self, instrument: str, holder: str, now: float, *, force: bool = False) -> bool:
        """End `holder`'s lease; False if they did not hold it."""
        current = self.holder(instrument, now)
        if current is None or (current.holder != holder and not force):
            return False
        del self._leases[instrument]
        return True

    def adopt(self, instrument: str, holder: str, expires: float, now: float) -> Lease | None:
        """Hold a lease another hub held, unchanged (its agent failed over to this hub).

        None, and nothing held, if it has run out or this hub holds one already.
        """
        if expires <= now or self.holder(instrument, now) is not None:
            return None
        lease = self._leases[instrument] = Lease(instrument, holder, expires)
        return lease

    def drop(self, instrument: str) -> Lease | None:
        """Forget the lease on `instrument`, whoever holds it: another hub serves it now."""
        return self._leases.pop(instrument, None)

    def expired(self, now: float) -> list[Lease]:
        """Remove and return the leases that have run out."""
        gone = [lease for lease in self._leases.values() if lease.expires <= now]
        for lease in gone:
            del self._leases[lease.instrument]
        return gone

    def permits(self, instrument: str, who: str, now: float) -> Lease | None:
        """The lease that stops `who` from driving `instrument`, or None if they may."""
        lease = self.holder(instrument, now)
        return lease if lease is not None and lease.holder != who else None
