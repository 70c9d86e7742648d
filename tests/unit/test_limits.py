"""The failure limiters: a key blocked after LIMIT refusals within WINDOW; the connection
throttle per station id (doubling lockouts), per address (distinct ids) and per pair."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from csms.domain.limits import ConnectionThrottle, DistinctFailures, FailureLimiter, IdLockouts

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_blocks_after_the_limit_within_the_window_and_unblocks_after_it() -> None:
    limiter = FailureLimiter(limit=3, window=timedelta(seconds=60))
    for second in range(3):
        assert not limiter.blocked("10.0.0.7", T0 + timedelta(seconds=second))
        limiter.failed("10.0.0.7", T0 + timedelta(seconds=second))
    assert limiter.blocked("10.0.0.7", T0 + timedelta(seconds=3))
    assert not limiter.blocked("10.0.0.8", T0 + timedelta(seconds=3)), "per address"
    assert limiter.blocked("10.0.0.7", T0 + timedelta(seconds=59))
    assert not limiter.blocked("10.0.0.7", T0 + timedelta(seconds=61)), "the oldest aged out"


def test_failures_spread_wider_than_the_window_never_block() -> None:
    limiter = FailureLimiter(limit=3, window=timedelta(seconds=60))
    for minute in range(10):
        at = T0 + timedelta(seconds=31 * minute)
        assert not limiter.blocked("10.0.0.7", at)
        limiter.failed("10.0.0.7", at)


def test_memory_is_bounded_by_forgetting_the_stalest_address() -> None:
    limiter = FailureLimiter(limit=1, window=timedelta(minutes=5), max_tracked=2)
    for address in ("a", "b", "c"):
        limiter.failed(address, T0)
    assert not limiter.blocked("a", T0), "forgotten"
    assert limiter.blocked("b", T0)
    assert limiter.blocked("c", T0)


# --- ConnectionThrottle (issue 22) ------------------------------------------------------


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_station_id_is_locked_out_with_a_doubling_lockout_from_any_address() -> None:
    ids = IdLockouts(free=3, first=timedelta(seconds=10), longest=timedelta(seconds=60))
    throttle = ConnectionThrottle(ids=ids)
    started = []
    for attempt in range(3):  # rotating addresses buys nothing
        address = f"10.0.0.{attempt}"
        assert not throttle.blocked(address, "CS1", password=True, now=at(attempt))
        started += throttle.refused(address, "CS1", password=True, now=at(attempt))
    assert [(s.rule, s.key, s.failures, s.until) for s in started] == [
        ("station", "CS1", 3, at(2 + 10))
    ]
    assert throttle.blocked("10.9.9.9", "CS1", password=True, now=at(11))
    assert not throttle.blocked("10.9.9.9", "CS2", password=True, now=at(11)), "per id"
    assert not throttle.blocked("10.9.9.9", "CS1", password=False, now=at(11)), "certificates"
    lockouts = [throttle.refused("10.0.0.1", "CS1", password=True, now=at(13))]
    lockouts.append(throttle.refused("10.0.0.1", "CS1", password=True, now=at(40)))
    lockouts.append(throttle.refused("10.0.0.1", "CS1", password=True, now=at(100)))
    assert [lockout.until for (lockout,) in lockouts] == [at(13 + 20), at(40 + 40), at(160)]
    throttle.admitted("CS1")  # a success forgets the failures
    assert not throttle.blocked("10.0.0.1", "CS1", password=True, now=at(101))
    assert throttle.refused("10.0.0.1", "CS1", password=True, now=at(101)) == []


def test_failures_of_one_id_do_not_lock_out_the_other_ids_behind_the_address() -> None:
    throttle = ConnectionThrottle()
    for second in range(200):  # a misconfigured station retrying, or a guesser on one id
        if not throttle.blocked("192.0.2.1", "CS1", password=True, now=at(second * 7)):
            throttle.refused("192.0.2.1", "CS1", password=True, now=at(second * 7))
    for station_id in ("CS2", "CS3"):
        assert not throttle.blocked("192.0.2.1", station_id, password=True, now=at(1400))


def test_many_failing_ids_from_one_address_block_its_password_attempts() -> None:
    addresses = DistinctFailures(limit=4, window=timedelta(minutes=10))
    throttle = ConnectionThrottle(addresses=addresses)
    started = []
    for number in range(4):
        assert not throttle.blocked("192.0.2.1", "CS9", password=True, now=at(number))
        started += throttle.refused("192.0.2.1", f"CS{number}", password=True, now=at(number))
    assert [(s.rule, s.key, s.failures) for s in started] == [("address", "192.0.2.1", 4)]
    assert started[0].until == at(600)
    assert throttle.blocked("192.0.2.1", "CS9", password=True, now=at(5))
    assert not throttle.blocked("192.0.2.1", "CS9", password=False, now=at(5)), "certificates"
    assert not throttle.blocked("192.0.2.2", "CS9", password=True, now=at(5)), "per address"
    assert not throttle.blocked("192.0.2.1", "CS9", password=True, now=at(601)), "aged out"


def test_refusals_of_any_kind_throttle_only_the_pair_of_address_and_id() -> None:
    throttle = ConnectionThrottle()
    for second in range(10):  # a station retrying a refused certificate
        assert not throttle.blocked("192.0.2.1", "CS1", password=False, now=at(second))
        assert throttle.refused("192.0.2.1", "CS1", password=False, now=at(second)) == []
    assert throttle.blocked("192.0.2.1", "CS1", password=False, now=at(10))
    assert not throttle.blocked("192.0.2.2", "CS1", password=False, now=at(10)), "elsewhere"
    assert not throttle.blocked("192.0.2.1", "CS2", password=True, now=at(10)), "others"
    assert not throttle.blocked("192.0.2.1", "CS1", password=False, now=at(61))


def test_the_throttle_remembers_a_bounded_number_of_ids_and_addresses() -> None:
    ids = IdLockouts(free=1, max_tracked=2)
    addresses = DistinctFailures(limit=1, max_tracked=2)
    throttle = ConnectionThrottle(ids=ids, addresses=addresses)
    for number in range(3):
        throttle.refused(f"a{number}", f"CS{number}", password=True, now=T0)
    assert len(ids._ids) == 2
    assert len(addresses._addresses) == 2
    assert not throttle.blocked("a9", "CS0", password=True, now=T0), "forgotten"
    assert throttle.blocked("a9", "CS2", password=True, now=T0)
