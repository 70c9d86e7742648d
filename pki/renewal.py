"""Renewal-window math, kept pure (the certbot lesson): when is a certificate due?"""

from __future__ import annotations

from datetime import datetime, timedelta

from pki.policy import RenewalRule


def renewal_due_at(not_before: datetime, not_after: datetime, rule: RenewalRule) -> datetime:
    """The instant from which a certificate should be renewed, never before notBefore.

    A fixed lead time suits long-lived station certificates (90 days); a fraction of the
    lifetime suits short-lived SECC certificates, which a 90-day alarm would flag on the
    day they are issued.
    """
    if rule.before_expiry_days is not None:
        due = not_after - timedelta(days=rule.before_expiry_days)
    else:
        assert rule.lifetime_fraction is not None
        lifetime = int((not_after - not_before).total_seconds())
        fraction = rule.lifetime_fraction
        due = not_before + timedelta(seconds=lifetime * fraction.numerator // fraction.denominator)
    return max(due, not_before)


def is_due(now: datetime, not_before: datetime, not_after: datetime, rule: RenewalRule) -> bool:
    return now >= renewal_due_at(not_before, not_after, rule)
