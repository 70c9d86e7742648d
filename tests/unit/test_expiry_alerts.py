"""Expiry alerts at 90 days without flooding (issue 22, item 24): a warning for a
certificate whose renewal is not progressing, critical at 30 and 14 days for any still
in use, each once per certificate and level; the thresholds from pkictl.toml. Real CA,
real database, the injected clock."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from test_home import with_keys
from test_renewal_workflow import STATION, issue, renewal_service

from csms.db.sessions import SqlSessionStore
from csms.domain.expiry import (
    ExpiryAlert,
    ExpiryLevel,
    ExpiryThresholds,
    RenewalProgress,
    expiry_alert,
)
from csms.domain.renewal import RenewalState
from csms.home import load_config
from csms.services.renewal_ports import RenewalSettings
from csms.services.renewals import RenewalService
from csms.services.sessions import SessionRecord
from pki.authority import CertificateAuthority
from pki.clock import FixedClock
from pki.records import CertificateQuery, CertificateRecord

NOT_AFTER = datetime(2028, 1, 1, tzinfo=UTC)
STALLED = timedelta(minutes=10)
DEFAULT = ExpiryThresholds()
W, C = ExpiryLevel.WARNING, ExpiryLevel.CRITICAL


def days_before(days: float) -> datetime:
    return NOT_AFTER - timedelta(days=days)


def progress(lead_days: float = 90, **kw: object) -> RenewalProgress:
    return RenewalProgress(NOT_AFTER, days_before(lead_days), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("now_days", "standing", "expected"),
    [
        # a station certificate (renewal starts 90 days before expiry)
        (91, progress(), None),  # outside every window
        (89, progress(open_state="triggered", open_since=days_before(89.5)), None),  # online
        (89, progress(open_state="triggered", open_since=days_before(89.5), online=False),
         ExpiryAlert(W, 90)),  # offline, stalled
        (89, progress(open_state="triggered", open_since=days_before(89.001), online=False),
         None),  # offline for less than the stall time: not yet
        (89, progress(), ExpiryAlert(W, 90)),  # no renewal started after its start
        (89, progress(lead_days=88), None),  # its jitter has not passed yet
        (89, progress(lead_days=88, last_failed=True), ExpiryAlert(W, 90)),
        (29, progress(open_state="signed", open_since=days_before(29.5)), ExpiryAlert(C, 30)),
        (13, progress(open_state="signed", open_since=days_before(13.5)), ExpiryAlert(C, 14)),
        (0.5, progress(), ExpiryAlert(C, 14)),
        # a 60-day SECC certificate renewed 20 days before expiry: not critical at 30
        (29, progress(lead_days=20), None),
        (19, progress(lead_days=20), ExpiryAlert(W, 90)),  # due, not started
        (19, progress(lead_days=20, open_state="triggered", open_since=days_before(19.5)), None),
        (13, progress(lead_days=20, open_state="triggered", open_since=days_before(19.5)),
         ExpiryAlert(C, 14)),
    ],
)  # fmt: skip
def test_the_level_a_certificate_has_reached(
    now_days: float, standing: RenewalProgress, expected: ExpiryAlert | None
) -> None:
    assert expiry_alert(standing, days_before(now_days), DEFAULT, STALLED) == expected


def test_levels_are_configurable() -> None:
    thresholds = ExpiryThresholds(warning_days=120, critical_days=(60, 7))
    assert expiry_alert(progress(lead_days=130), days_before(119), thresholds, STALLED) == (
        ExpiryAlert(W, 120)
    )
    assert expiry_alert(progress(), days_before(59), thresholds, STALLED) == ExpiryAlert(C, 60)
    assert expiry_alert(progress(), days_before(29), thresholds, STALLED) == ExpiryAlert(C, 60)


def test_the_thresholds_are_read_from_the_renewal_table(tmp_path: object) -> None:
    keys = "expiry_warning_days = 120\nexpiry_critical_days = 45\nexpiry_alert_days = 7\n"
    config = load_config(with_keys(tmp_path, "renewal", keys))  # type: ignore[arg-type]
    settings = RenewalSettings(**config.renewal)
    assert (settings.expiry_warning_days, settings.expiry_critical_days,
            settings.expiry_alert_days) == (120, 45, 7)  # fmt: skip
    assert (RenewalSettings().expiry_warning_days, RenewalSettings().expiry_critical_days,
            RenewalSettings().expiry_alert_days) == (90, 30, 14)  # fmt: skip


# --- through the renewal workflow: real CA and database, the injected clock -------------


async def certificate(ca: CertificateAuthority, make_csr: Callable[..., str]) -> CertificateRecord:
    serial = await issue(ca, make_csr, STATION)
    (record,) = await ca.store.find_certificates(CertificateQuery(serial=int(serial, 16)))
    return record


async def expiring(service: RenewalService) -> list[str]:
    return [
        a.message.split(":")[0] + " at " + a.message.split(" (in ")[1].split(" ")[0]
        for a in await service.alerts.list(STATION)
        if a.code == "certificate-expiring"
    ]


async def go_online(ca: CertificateAuthority, clock: FixedClock) -> None:
    store = SqlSessionStore(ca.store.database)  # type: ignore[attr-defined]
    now = clock.now()
    await store.save(SessionRecord(STATION, True, 3, "127.0.0.1", False, None, None, now, now))


async def test_a_station_away_through_its_window_gets_a_warning_then_two_criticals_once_each(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Hourly scans from 91 days before expiry to the end: the renewal is triggered at
    its start and the station never comes; one warning once the renewal stalls, one
    critical at 30 and one at 14 days -- three alerts in all, not one per scan."""
    caplog.set_level(logging.WARNING, logger="pkictl.alerts")
    service = renewal_service(ca, clock)
    record = await certificate(ca, make_csr)
    clock.advance(record.not_after - timedelta(days=91) - clock.now())
    while clock.now() < record.not_after - timedelta(hours=1):
        await service.scan()
        clock.advance(timedelta(hours=6))
    assert await expiring(service) == ["warning at 89", "critical at 30", "critical at 14"]
    (warning, *_) = await service.alerts.list(STATION)
    assert "its renewal #1 is triggered and the station is offline" in warning.message
    levels = [r.levelno for r in caplog.records if "certificate-expiring" in r.getMessage()]
    assert levels == [logging.WARNING, logging.ERROR, logging.ERROR]
    await service.close()


async def test_a_renewal_that_progresses_raises_nothing(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    """The station is connected: its renewal is under way, however long it is open,
    until the critical levels (where it is still in use)."""
    service = renewal_service(ca, clock)
    record = await certificate(ca, make_csr)
    await go_online(ca, clock)
    clock.advance(record.not_after - timedelta(days=89) - clock.now())
    (started,) = await service.scan()
    for _ in range(10):
        clock.advance(timedelta(days=5))
        await service.scan()
    assert (await service.get(started.id)).state is RenewalState.TRIGGERED
    assert await expiring(service) == []
    await service.close()


async def test_no_warning_before_the_jitter_then_one_when_no_renewal_started(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    """A renewal deferred by its jitter is not late; once its start has passed without
    a renewal (the scan did not run, the cap was full) it is."""
    service = renewal_service(ca, clock, RenewalSettings(jitter_s=10 * 86400))
    record = await certificate(ca, make_csr)
    starts_at = service.starts_at(record)
    assert starts_at > record.renew_after  # (its jitter, fixed by its serial)
    clock.advance(record.renew_after - clock.now())
    assert await service.expiry().check() == 0
    clock.advance(starts_at - clock.now() - timedelta(seconds=1))
    assert await service.expiry().check() == 0
    clock.advance(timedelta(seconds=2))
    assert await service.expiry().check() == 1
    assert await service.expiry().check() == 0  # once
    (alert,) = await service.alerts.list(STATION)
    assert f"no renewal started (due since {starts_at:%Y-%m-%d %H:%M} UTC)" in alert.message
    await service.close()


async def test_a_failed_renewal_raises_the_warning(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    service = renewal_service(ca, clock)
    record = await certificate(ca, make_csr)
    await go_online(ca, clock)
    clock.advance(record.not_after - timedelta(days=80) - clock.now())
    (started,) = await service.scan()
    assert await expiring(service) == []
    await service.store.move(
        started.id, RenewalState.TRIGGERED, RenewalState.FAILED, clock.now(), reason="test"
    )
    assert await service.expiry().check() == 1
    (alert,) = await service.alerts.list(STATION)
    assert alert.message.startswith("warning: certificate ")
    assert alert.message.endswith("its last renewal failed")
    await service.close()


async def test_an_alert_raised_by_the_14_day_check_of_an_older_version_is_not_repeated(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    service = renewal_service(ca, clock)
    record = await certificate(ca, make_csr)
    key = f"expiring:{record.issuer_name_hash[:16]}:{record.serial_hex}"  # its old key
    await service.alerts.raise_once("certificate-expiring", STATION, "old", key)
    clock.advance(record.not_after - timedelta(days=13) - clock.now())
    assert await service.expiry().check() == 0
    await service.close()
