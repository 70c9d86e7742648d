"""Throttling repeated refused connection attempts from one address.

A station with a wrong password or certificate retries forever; an attacker guesses.
After LIMIT refusals within WINDOW, further attempts from that address are answered
429 at once, without touching the database or verifying anything, until the window
has moved on. Pure: time is passed in.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from datetime import datetime, timedelta

LIMIT = 10
WINDOW = timedelta(minutes=1)
MAX_TRACKED = 10_000  # addresses remembered at most; the stalest are forgotten first


class FailureLimiter:
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
