"""The failure limiter: LIMIT refusals within WINDOW block an address until they age out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from csms.domain.limits import FailureLimiter

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
