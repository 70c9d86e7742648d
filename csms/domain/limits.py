"""Throttling refused connection attempts: per station id, per address, per pair.

A station with a wrong password or certificate retries forever; an attacker guesses.
Throttled attempts are answered 429 at once, without touching the database or
verifying anything (`ConnectionThrottle` says who). Pure: time is passed in.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

LIMIT = 10
WINDOW = timedelta(minutes=1)
MAX_TRACKED = 10_000  # addresses remembered at most; the stalest are forgotten first


class FailureLimiter:
    """LIMIT failures of one key within WINDOW block it until the oldest ages out."""

    def __init__(
        self, limit: int = LIMIT, window: timedelta = WINDOW, max_tracked: int = MAX_TRACKED
    ) -> None:
        self._limit = limit
        self._window = window
        self._max_tracked = max_tracked
        self._failures: OrderedDict[str, deque[datetime]] = OrderedDict()

    def blocked(self, address: str, now: datetime) -> bool:
        failures = self._failures.get(address)
        if failures is None:
            return False
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return False
        return len(failures) >= self._limit

    def failed(self, address: str, now: datetime) -> None:
        failures = self._failures.setdefault(address, deque(maxlen=self._limit))
        failures.append(now)
        self._failures.move_to_end(address)
        while len(self._failures) > self._max_tracked:
            self._failures.popitem(last=False)


# --- the connection throttle (issue 22): per station id, per address, per pair ---------

PAIR_LIMIT = 10
PAIR_WINDOW = timedelta(minutes=1)
ID_FREE_FAILURES = 5
ID_FIRST_LOCKOUT = timedelta(seconds=15)
ID_LONGEST_LOCKOUT = timedelta(minutes=15)
ID_RESET_AFTER = timedelta(hours=24)
ADDRESS_DISTINCT_IDS = 20
ADDRESS_WINDOW = timedelta(minutes=10)
MAX_TRACKED_IDS = 50_000


@dataclass(frozen=True)
class Lockout:
    """A lockout that has just begun: audited once, when it starts."""

    rule: str
    """"station" (one id's password failures) or "address" (many ids' from one address)."""
    key: str
    """The station id or the address."""
    failures: int
    """The id's consecutive failures, or the distinct ids that failed from the address."""
    until: datetime


@dataclass(slots=True)
class _IdFailures:
    count: int
    last: datetime
    until: datetime | None = None


class IdLockouts:
    """Password failures per station id, from whatever address: after ``free`` of them
    in a row, each further one locks the id for ``first`` doubled per failure up to
    ``longest``. An admission forgets them; so do ``reset_after`` without a failure.
    Unknown ids are tracked the same way, so a lockout tells nothing of who exists."""

    def __init__(
        self,
        free: int = ID_FREE_FAILURES,
        first: timedelta = ID_FIRST_LOCKOUT,
        longest: timedelta = ID_LONGEST_LOCKOUT,
        reset_after: timedelta = ID_RESET_AFTER,
        max_tracked: int = MAX_TRACKED_IDS,
    ) -> None:
        self._free = free
        self._first = first
        self._longest = longest
        self._reset_after = reset_after
        self._max_tracked = max_tracked
        self._ids: OrderedDict[str, _IdFailures] = OrderedDict()

    def locked(self, station_id: str, now: datetime) -> bool:
        failures = self._ids.get(station_id)
        return failures is not None and failures.until is not None and now < failures.until

    def failed(self, station_id: str, now: datetime) -> Lockout | None:
        failures = self._ids.pop(station_id, None)
        if failures is None or now - failures.last >= self._reset_after:
            failures = _IdFailures(0, now)
        failures.count += 1
        failures.last = now
        self._ids[station_id] = failures  # the most recent last
        while len(self._ids) > self._max_tracked:
            self._ids.popitem(last=False)
        beyond = failures.count - self._free
        if beyond < 0:
            return None
        lasting = min(self._first * 2 ** min(beyond, 32), self._longest)
        failures.until = now + lasting
        return Lockout("station", station_id, failures.count, failures.until)

    def admitted(self, station_id: str) -> None:
        self._ids.pop(station_id, None)


class DistinctFailures:
    """Station ids whose password failed, per address: ``limit`` different ids within
    ``window`` block the address (guessing across ids: password spraying) until the
    oldest of them ages out. One station failing again and again counts once, so a
    misconfigured station does not lock out the others behind the same (NAT) address."""

    def __init__(
        self,
        limit: int = ADDRESS_DISTINCT_IDS,
        window: timedelta = ADDRESS_WINDOW,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self._limit = limit
        self._window = window
        self._max_tracked = max_tracked
        self._addresses: OrderedDict[str, OrderedDict[str, datetime]] = OrderedDict()

    def _recent(self, address: str, now: datetime) -> OrderedDict[str, datetime] | None:
        ids = self._addresses.get(address)
        if ids is None:
            return None
        while ids and next(iter(ids.values())) <= now - self._window:
            ids.popitem(last=False)
        if not ids:
            del self._addresses[address]
            return None
        return ids

    def blocked(self, address: str, now: datetime) -> bool:
        ids = self._recent(address, now)
        return ids is not None and len(ids) >= self._limit

    def failed(self, address: str, station_id: str, now: datetime) -> Lockout | None:
        ids = self._recent(address, now)
        if ids is None:
            ids = self._addresses[address] = OrderedDict()
        before = len(ids)
        ids.pop(station_id, None)
        ids[station_id] = now  # oldest first
        while len(ids) > self._limit:
            ids.popitem(last=False)
        self._addresses.move_to_end(address)
        while len(self._addresses) > self._max_tracked:
            self._addresses.popitem(last=False)
        if before < self._limit <= len(ids):
            return Lockout("address", address, len(ids), next(iter(ids.values())) + self._window)
        return None


class ConnectionThrottle:
    """Who is answered 429 before anything is verified (issue 22):

    - a station id after ``ID_FREE_FAILURES`` password failures in a row, from any
      address, with a lockout doubling from 15 s to 15 minutes (`IdLockouts`): rotating
      addresses does not buy guesses;
    - an address from which the passwords of ``ADDRESS_DISTINCT_IDS`` different ids
      failed within 10 minutes (`DistinctFailures`), for password attempts only;
    - a station id from one address after ``PAIR_LIMIT`` refusals of any kind within a
      minute (`FailureLimiter` on the pair): a station retrying a refused certificate
      cannot flood the log and the audit trail, and locks out no one else.

    A certificate holder is never locked out by password failures (its own or its
    address's), and nobody can lock out a station id by presenting certificates it
    does not own from elsewhere."""

    def __init__(
        self,
        ids: IdLockouts | None = None,
        addresses: DistinctFailures | None = None,
        pairs: FailureLimiter | None = None,
    ) -> None:
        self._ids = ids or IdLockouts()
        self._addresses = addresses or DistinctFailures()
        self._pairs = pairs or FailureLimiter(PAIR_LIMIT, PAIR_WINDOW)

    def blocked(self, address: str, station_id: str, *, password: bool, now: datetime) -> bool:
        """``password``: the attempt has no client certificate (profile 1 or 2)."""
        if self._pairs.blocked(f"{address} {station_id}", now):
            return True
        return password and (
            self._ids.locked(station_id, now) or self._addresses.blocked(address, now)
        )

    def refused(
        self, address: str, station_id: str, *, password: bool, now: datetime
    ) -> list[Lockout]:
        """A refusal (``password``: of a password attempt, answered 401); the lockouts it
        starts."""
        self._pairs.failed(f"{address} {station_id}", now)
        if not password:
            return []
        started = [
            self._ids.failed(station_id, now),
            self._addresses.failed(address, station_id, now),
        ]
        return [lockout for lockout in started if lockout is not None]

    def admitted(self, station_id: str) -> None:
        self._ids.admitted(station_id)
