"""The renewal workflow: its transition table, and resuming what a killed `pkictl
serve` left half done, over a real store and CA (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from csms.db.alerts import SqlAlertStore
from csms.db.outbox import SqlOutboxStore
from csms.db.renewals import SqlRenewalStore
from csms.db.sessions import SqlSessionStore
from csms.domain.outbox import CallState
from csms.domain.renewal import (
    TRANSITIONS,
    CertificateKind,
    InvalidTransition,
    RenewalEvent,
    RenewalState,
    advance,
)
from csms.services import renewals
from csms.services.alerts import Alerts
from csms.services.outbox import Outbox
from csms.services.renewal_ports import Renewal, RenewalSettings
from csms.services.renewals import PROFILE_FOR, UNANSWERED, RenewalService
from csms.services.revocations import Revocations
from csms.services.sessions import SessionService
from csms.services.stations import StationService
from pki import authority
from pki.audit import AuditEvent
from pki.authority import CertificateAuthority
from pki.clock import FixedClock
from pki.records import CertificateQuery, CertificateRecord, CertificateSource, Station

STATION = "CS001"
S, E = RenewalState, RenewalEvent
ALLOWED = {
    (S.DUE, E.TRIGGER): S.TRIGGERED,
    (S.DUE, E.CSR): S.CSR_RECEIVED,
    (S.TRIGGERED, E.CSR): S.CSR_RECEIVED,
    (S.TRIGGERED, E.REJECT): S.FAILED,
    (S.CSR_RECEIVED, E.SIGN): S.SIGNED,
    (S.CSR_RECEIVED, E.REFUSE): S.FAILED,
    (S.CSR_RECEIVED, E.RESUME): S.DUE,
    (S.SIGNED, E.ACCEPT): S.DELIVERED,
    (S.SIGNED, E.REJECT): S.FAILED,
    (S.SIGNED, E.CONFIRM): S.CONFIRMED,
    (S.SIGNED, E.REPLACE): S.SIGNED,
    (S.DELIVERED, E.CONFIRM): S.CONFIRMED,
    (S.DELIVERED, E.REPLACE): S.SIGNED,
    (S.DUE, E.WITHDRAW): S.FAILED,
    (S.TRIGGERED, E.WITHDRAW): S.FAILED,
    (S.CSR_RECEIVED, E.WITHDRAW): S.FAILED,
    (S.SIGNED, E.WITHDRAW): S.FAILED,
    (S.DELIVERED, E.WITHDRAW): S.FAILED,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, E)))
def test_every_pair_is_allowed_exactly_as_the_table_says(
    state: RenewalState, event: RenewalEvent
) -> None:
    if (state, event) in ALLOWED:
        assert advance(state, event) is ALLOWED[state, event]
    else:
        with pytest.raises(InvalidTransition, match=f"{event} is not allowed in state {state}"):
            advance(state, event)


def test_ended_renewals_have_no_way_out() -> None:
    assert not [key for key in TRANSITIONS if key[0] in (S.CONFIRMED, S.FAILED)]


def renewal_service(
    ca: CertificateAuthority, clock: FixedClock, settings: RenewalSettings | None = None
) -> RenewalService:
    engine = ca.store.engine  # type: ignore[attr-defined]
    database = ca.store.database  # type: ignore[attr-defined]
    return RenewalService(
        SqlRenewalStore(database), ca, Outbox(SqlOutboxStore(database), clock), clock,
        Alerts(SqlAlertStore(engine), clock), StationService(ca.store, clock),
        Revocations(ca, lambda relative, _: Path(relative)),  # CRL files: not under test here
        settings or RenewalSettings(jitter_s=0),
    )  # fmt: skip


async def issue(ca: CertificateAuthority, make_csr: Callable[..., str], station: str) -> str:
    serial = {"CS001": "SN-0001", "CS002": "SN-0002"}[station]
    issued = await ca.issue_for_station(
        csr_pem=make_csr(cn=serial), profile_name="charging-station", station_id=station,
        actor="test",
    )  # fmt: skip
    return issued.record.serial_hex


async def second_station(ca: CertificateAuthority, clock: FixedClock) -> None:
    await ca.store.add_station(
        Station("CS002", "SN-0002", None, 3, None, clock.now()),
        AuditEvent("station.added", "test", "station:CS002", "ok", {}), clock.now(),
    )  # fmt: skip


async def test_the_scan_renews_what_reached_its_threshold_once(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    service = renewal_service(ca, clock)
    serial = await issue(ca, make_csr, STATION)  # ~1 year, renewed 90 days before expiry
    assert await service.scan() == []
    (record,) = await ca.store.find_certificates(CertificateQuery(serial=int(serial, 16)))
    clock.advance(record.not_after - timedelta(days=91) - clock.now())
    assert await service.due() == []
    clock.advance(timedelta(days=2))
    (due,) = await service.due()
    assert (due.station_id, due.kind, due.serial_hex) == (STATION, CertificateKind.STATION, serial)
    (started,) = await service.scan()
    assert (started.state, started.old_serial, started.requested_by) == (
        S.TRIGGERED, serial, "scan",
    )  # fmt: skip
    assert await service.scan() == []  # open: not started twice
    triggers = [i for i in await service.outbox.list(STATION) if i.action == "TriggerMessage"]
    assert [t.payload for t in triggers] == [
        {"requested_message": "SignChargingStationCertificate"}
    ]


async def test_a_renewal_waits_out_its_jitter_and_the_current_certificate_decides(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    """A certificate past its threshold starts renewing only once its jitter has passed
    (a cohort's renewals spread out); and an older certificate due earlier does not
    start one while the station's current certificate is still inside its jitter."""
    service = renewal_service(ca, clock, RenewalSettings(jitter_s=3 * 86400))
    first = await issue(ca, make_csr, STATION)
    clock.advance(timedelta(days=60))  # more than the validity spread (45 days)
    second = await issue(ca, make_csr, STATION)
    records = {
        r.serial_hex: r
        for r in await ca.store.find_certificates(CertificateQuery(station_id=STATION))
    }
    older, current = records[first], records[second]
    assert older.not_after < current.not_after  # the current one: it lasts longest
    starts = service.starts_at(current)
    assert current.renew_after < starts <= current.renew_after + timedelta(days=3)
    clock.advance(current.renew_after - clock.now())  # the older one is well past its own
    assert service.starts_at(older) < clock.now()
    assert await service.due() == []
    clock.advance(starts - clock.now() - timedelta(seconds=1))
    assert await service.due() == []
    clock.advance(timedelta(seconds=1))
    (due,) = await service.due()
    assert (due.serial_hex, due.starts_at) == (second, starts)


async def test_a_station_back_without_its_csr_is_triggered_again_once(
    ca: CertificateAuthority, clock: FixedClock
) -> None:
    """It accepted the trigger, then its connection (and the CSR on it) was lost: at its
    next connection it is triggered again -- not while a trigger is on its way, and not
    after a trigger it failed to answer (the scan retries those, with backoff)."""
    service = renewal_service(ca, clock)
    renewal = await service.request(STATION, CertificateKind.STATION, requested_by="test")
    outbox = service.outbox.store

    async def triggers() -> list[CallState]:
        return [i.state for i in await service.outbox.list(STATION) if i.action == "TriggerMessage"]

    (first,) = await service.outbox.list(STATION)
    await service.presented(STATION, None)
    assert await triggers() == [CallState.QUEUED]  # on its way: not repeated
    await outbox.move(first.id, CallState.QUEUED, CallState.SENT, clock.now())
    await outbox.move(first.id, CallState.SENT, CallState.ANSWERED, clock.now(),
                      response=json.dumps({"status": "Accepted"}))  # fmt: skip
    await service.presented(STATION, None)
    assert await triggers() == [CallState.ANSWERED, CallState.QUEUED]
    await service.presented(STATION, None)
    assert await triggers() == [CallState.ANSWERED, CallState.QUEUED]
    (_, second) = await service.outbox.list(STATION)
    await outbox.move(second.id, CallState.QUEUED, CallState.SENT, clock.now())
    await outbox.move(second.id, CallState.SENT, CallState.TIMED_OUT, clock.now(), error="late")
    await service.presented(STATION, None)
    assert await triggers() == [CallState.ANSWERED, CallState.TIMED_OUT]
    assert (await service.get(renewal.id)).state is S.TRIGGERED


async def test_a_renewal_cut_between_its_move_and_its_trigger_is_triggered_at_connect(
    ca: CertificateAuthority, clock: FixedClock
) -> None:
    service = renewal_service(ca, clock)
    renewal = await service.store.create(
        STATION, CertificateKind.STATION, S.DUE, requested_by="test", old_serial=None,
        at=clock.now(),
    )  # fmt: skip
    assert renewal is not None
    await service.store.move(renewal.id, S.DUE, S.TRIGGERED, clock.now())  # then cut
    assert await service.outbox.list(STATION) == []
    await service.presented(STATION, None)
    (trigger,) = await service.outbox.list(STATION)
    assert trigger.payload == {"requested_message": "SignChargingStationCertificate"}


async def test_a_newer_certificate_in_use_is_not_renewed_for_an_older_one(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    service = renewal_service(ca, clock)
    old = await issue(ca, make_csr, STATION)
    clock.advance(timedelta(days=300))
    new = await issue(ca, make_csr, STATION)
    for serial in (old, new):  # the station presented the old, then the new one
        record = await ca.find_by_serial(int(serial, 16))
        event = AuditEvent("certificate.observed", "test", "station:CS001", "ok", {})
        await ca.store.record_presented(record, event, clock.now())
        clock.advance(timedelta(seconds=1))
    assert await service.due() == []  # the old one is due, but no longer in use


def factory_certificate(station_id: str, not_after: datetime) -> CertificateRecord:
    """A certificate of the manufacturer's CA the station presented: observed."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Factory CA")])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(not_after - timedelta(days=365)).not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return CertificateRecord.from_certificate(
        certificate, renew_after=not_after - timedelta(days=90),
        source=CertificateSource.OBSERVED, issuer_ca=None, profile=None, station_id=station_id,
    )  # fmt: skip


async def test_a_station_initiated_renewal_supersedes_the_factory_certificate(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    """The station sends its CSR on its own while it still uses its factory certificate
    (observed, no profile): the renewal replaces that one. Before, it was looked up by
    profile, not found, and stayed valid and "in use": due in every scan, alerted on
    before its expiry although the station had long renewed."""
    service = renewal_service(ca, clock)
    factory = factory_certificate(STATION, clock.now() + timedelta(days=60))
    event = AuditEvent("certificate.observed", "test", "station:CS001", "ok", {})
    await ca.store.record_presented(factory, event, clock.now())
    answer = await service.sign(STATION, make_csr(cn="SN-0001"), CertificateKind.STATION)
    assert answer.accepted
    (renewal,) = await service.store.open_renewals(STATION)
    assert renewal.old_serial == factory.serial_hex
    assert renewal.new_serial is not None
    await service.presented(STATION, renewal.new_serial)
    assert (await service.get(renewal.id)).state is S.CONFIRMED
    assert (await ca.find_by_serial(factory.serial)).status.value == "superseded"
    clock.advance(timedelta(days=45))  # past the factory certificate's renewal point
    assert await service.due() == []


async def connect(ca: CertificateAuthority, clock: FixedClock, *stations: str) -> SessionService:
    sessions = SessionService(SqlSessionStore(ca.store.database), clock, node_id="node")
    for station in stations:
        await sessions.connected(
            station, security_profile=3, boot_pending=False, remote="127.0.0.1",
            certificate_serial=None, certificate_not_after=None,
        )  # fmt: skip
    return sessions


async def test_the_scan_starts_no_more_than_max_in_flight_of_connected_stations(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    await second_station(ca, clock)
    service = renewal_service(ca, clock, RenewalSettings(max_in_flight=1, jitter_s=0))
    for station in (STATION, "CS002"):
        await issue(ca, make_csr, station)
    sessions = await connect(ca, clock, STATION, "CS002")
    clock.advance(timedelta(days=300))
    (first,) = await service.scan()
    assert await service.scan() == []  # full until the open one ends
    await sessions.disconnected(first.station_id)  # offline: it holds no room while away
    (second,) = await service.scan()
    assert {first.station_id, second.station_id} == {STATION, "CS002"}


async def test_renewals_asked_beyond_the_cap_wait_and_start_as_room_is_made(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    await second_station(ca, clock)
    service = renewal_service(ca, clock, RenewalSettings(max_in_flight=1, jitter_s=0))
    await connect(ca, clock, STATION, "CS002")
    first, second = await service.request_all(
        [(STATION, CertificateKind.STATION, None), ("CS002", CertificateKind.STATION, None)],
        requested_by="test",
    )
    assert (first.state, second.state) == (S.TRIGGERED, S.DUE)  # held back by the cap
    again = await service.request_all(
        [("CS002", CertificateKind.STATION, None), (STATION, CertificateKind.STATION, None),
         ("CS002", CertificateKind.STATION, None)],
        requested_by="test",
    )  # fmt: skip
    assert [r.id for r in again] == [second.id, first.id, second.id]  # the open ones
    assert await service.fill() == 0
    await service.presented("CS002", None)  # connecting again does not jump the queue
    assert (await service.get(second.id)).state is S.DUE
    answer = await service.sign(STATION, make_csr(cn="SN-9999"), CertificateKind.STATION)
    assert not answer.accepted  # the first one fails: room for the second
    await service.fill()  # (or the fill its failure scheduled: one of them triggers it)
    assert (await service.get(second.id)).state is S.TRIGGERED
    triggers = [i.station_id for i in await service.outbox.list() if i.action == "TriggerMessage"]
    assert triggers == [STATION, "CS002"]
    await service.close()


async def test_a_long_request_triggers_its_first_batch_before_writing_the_next(
    ca: CertificateAuthority,
    clock: FixedClock,
    make_csr: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`pkictl renew` of 10,000 stations: the nodes get work after the first batch, not
    after the whole list is written; each batch's current certificates in one query."""
    await second_station(ca, clock)
    serials = [await issue(ca, make_csr, station) for station in (STATION, "CS002")]
    await connect(ca, clock, STATION, "CS002")
    service = renewal_service(ca, clock, RenewalSettings(max_in_flight=5, jitter_s=0))
    monkeypatch.setattr(renewals, "CREATE_BATCH", 1)
    triggered_before: list[list[str]] = []
    create_many = service.store.create_many

    async def recording(*args: Any, **kwargs: Any) -> list[Renewal]:
        outbox = await service.outbox.list()
        triggered_before.append([i.station_id for i in outbox if i.action == "TriggerMessage"])
        return await create_many(*args, **kwargs)

    monkeypatch.setattr(service.store, "create_many", recording)
    first, second = await service.request_all(
        [(STATION, CertificateKind.STATION, None), ("CS002", CertificateKind.STATION, None)],
        requested_by="test",
    )
    assert triggered_before == [[], [STATION]]
    assert (first.state, second.state) == (S.TRIGGERED, S.TRIGGERED)
    assert [first.old_serial, second.old_serial] == serials
    await service.close()


async def test_certificates_of_many_stations_come_in_bounded_queries(
    ca: CertificateAuthority,
    clock: FixedClock,
    make_csr: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await second_station(ca, clock)
    serials = {station: await issue(ca, make_csr, station) for station in (STATION, "CS002")}
    monkeypatch.setattr(authority, "STATIONS_PER_QUERY", 2)
    queries: list[tuple[str, ...] | None] = []
    find = ca.store.find_certificates

    async def recording(query: CertificateQuery) -> list[CertificateRecord]:
        queries.append(query.station_ids)
        return await find(query)

    monkeypatch.setattr(ca.store, "find_certificates", recording)
    found = await ca.certificates_of_stations(["CS002", "CS404", STATION])
    assert queries == [("CS002", "CS404"), (STATION,)]
    assert {s: [r.serial_hex for r in records] for s, records in found.items()} == {
        "CS002": [serials["CS002"]],
        "CS404": [],
        STATION: [serials[STATION]],
    }


async def test_a_fill_triggers_its_renewals_in_one_commit_then_their_calls_in_another(
    sqlite_ca: CertificateAuthority, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit is SQLite's inline path (ADR 11): one at a time, `pkictl renew` took
    the write lock twice per station it triggered, against two busy workers."""
    ca = sqlite_ca
    database = ca.store.database
    await second_station(ca, clock)
    await connect(ca, clock, STATION, "CS002")
    held_back = renewal_service(ca, clock, RenewalSettings(max_in_flight=0, jitter_s=0))
    await held_back.request_all(
        [(STATION, CertificateKind.STATION, None), ("CS002", CertificateKind.STATION, None)],
        requested_by="test",
    )
    service = dataclasses.replace(held_back, settings=RenewalSettings(max_in_flight=5))
    batches: list[int] = []
    run_units = database._run_units

    def counted(units: list[Any]) -> list[Any]:
        batches.append(len(units))
        return run_units(units)

    monkeypatch.setattr(database, "_run_units", counted)
    assert await service.fill() == 2
    assert batches == [2, 2]  # the two moves, then the two TriggerMessages
    await service.close()


async def test_renewals_are_read_back_many_at_once_in_the_order_asked(
    ca: CertificateAuthority, clock: FixedClock
) -> None:
    await second_station(ca, clock)
    service = renewal_service(ca, clock)
    first, second = await service.request_all(
        [(STATION, CertificateKind.STATION, None), ("CS002", CertificateKind.STATION, None)],
        requested_by="test",
    )
    ids = [second.id, first.id, second.id, *range(first.id + 10, first.id + 1010)]
    with pytest.raises(LookupError, match=f"no renewal #{first.id + 10}"):
        await service.store.get_many(ids)  # (over 500: in chunks)
    assert [r.id for r in await service.store.get_many(ids[:3])] == ids[:3]
    await service.close()


async def test_a_node_fills_the_room_with_stations_it_holds_first(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    """Its own stations get their TriggerMessage at once; another node's wait for that
    node to see the call (a poll interval on SQLite) while holding a place."""
    await second_station(ca, clock)
    for station, node in ((STATION, "elsewhere"), ("CS002", "node")):
        await SessionService(SqlSessionStore(ca.store.database), clock, node_id=node).connected(
            station, security_profile=3, boot_pending=False, remote="127.0.0.1",
            certificate_serial=None, certificate_not_after=None,
        )  # fmt: skip
    service = renewal_service(ca, clock, RenewalSettings(max_in_flight=1, jitter_s=0))
    here = dataclasses.replace(service.outbox, node_id="node")
    service = dataclasses.replace(service, outbox=here)
    older, held_here = await service.request_all(
        [(STATION, CertificateKind.STATION, None), ("CS002", CertificateKind.STATION, None)],
        requested_by="test",
    )
    assert (older.state, held_here.state) == (S.DUE, S.TRIGGERED)
    answer = await service.sign("CS002", make_csr(cn="SN-9999"), CertificateKind.STATION)
    assert not answer.accepted  # it fails: room, and none of this node's stations wait
    await service.fill()  # (or the fill its failure scheduled)
    assert (await service.get(older.id)).state is S.TRIGGERED  # then the other node's
    await service.close()


async def test_failures_back_off_then_stop_with_an_alert(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    settings = RenewalSettings(retry_after_s=600, max_attempts=2, jitter_s=0)
    service = renewal_service(ca, clock, settings)
    await issue(ca, make_csr, STATION)
    clock.advance(timedelta(days=300))
    for attempt in (1, 2):
        (started,) = await service.scan()
        answer = await service.sign(STATION, make_csr(cn="SN-9999"), CertificateKind.STATION)
        assert not answer.accepted  # wrong serial: the pipeline refuses, the renewal fails
        assert (await service.get(started.id)).state is S.FAILED
        if attempt == 1:
            clock.advance(timedelta(seconds=599))
            assert await service.scan() == []  # still waiting
            clock.advance(timedelta(seconds=1))
    clock.advance(timedelta(days=30))
    assert await service.scan() == []  # max_attempts reached
    codes = [a.code for a in await service.alerts.list(STATION) if a.code.startswith("renewal-")]
    assert codes == ["renewal-failed", "renewal-failed", "renewal-abandoned"]
    history = await service.list(STATION)
    assert [r.state for r in history] == [S.FAILED, S.FAILED]
    (now,) = await service.list(STATION, latest_only=True)  # where the station stands
    assert now.id == history[-1].id


async def test_an_unanswered_trigger_fails_the_renewal_and_the_scan_retries_it(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    """A TriggerMessage not answered in time used to leave the renewal `triggered` for
    ever (holding a place under max_in_flight): it fails, with an alert, and the scan
    starts the next attempt after the backoff."""
    service = renewal_service(ca, clock, RenewalSettings(retry_after_s=600, jitter_s=0))
    await issue(ca, make_csr, STATION)
    clock.advance(timedelta(days=300))
    (started,) = await service.scan()
    (trigger,) = await service.outbox.list(STATION)
    outbox = service.outbox.store
    await outbox.move(trigger.id, CallState.QUEUED, CallState.SENT, clock.now())
    await outbox.move(trigger.id, CallState.SENT, CallState.TIMED_OUT, clock.now(),
                      error="no answer within 30 s")  # fmt: skip
    (item,) = await service.outbox.list(STATION)
    await service.trigger_finished(item)
    failed = await service.get(started.id)
    assert failed.state is S.FAILED
    assert failed.reason == "TriggerMessage timed_out: no answer within 30 s"
    (alert,) = [a for a in await service.alerts.list(STATION) if a.code.startswith("renewal-")]
    assert alert.code == "renewal-failed"
    assert await service.scan() == []  # backing off
    clock.advance(timedelta(seconds=600))
    (again,) = await service.scan()
    assert again.id != started.id
    assert again.state is S.TRIGGERED


async def test_a_trigger_accepted_without_a_csr_fails_after_retry_after_s(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    """The station accepted the TriggerMessage and stays connected, but no CSR comes: the
    scan fails the renewal after `retry_after_s`, so it neither holds its place under
    max_in_flight for ever nor escapes the backoff. Offline, it is left for its next
    connection to trigger again."""
    service = renewal_service(ca, clock, RenewalSettings(retry_after_s=600, jitter_s=0))
    await issue(ca, make_csr, STATION)
    sessions = await connect(ca, clock, STATION)
    renewal = await service.request(STATION, CertificateKind.STATION, requested_by="test")
    (trigger,) = await service.outbox.list(STATION)
    await answer(service, trigger.id, {"status": "Accepted"})
    clock.advance(timedelta(seconds=599))
    await service.scan()
    assert (await service.get(renewal.id)).state is S.TRIGGERED
    clock.advance(timedelta(seconds=1))
    await sessions.disconnected(STATION)
    await service.scan()
    assert (await service.get(renewal.id)).state is S.TRIGGERED  # offline: not its fault
    await connect(ca, clock, STATION)
    await service.scan()
    failed = await service.get(renewal.id)
    assert failed.state is S.FAILED
    assert failed.reason == "the station accepted the TriggerMessage but sent no CSR within 600 s"


async def test_certificates_per_station_are_capped_per_24_hours(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    """Past max_certificates_per_day a CSR is refused with the reason and alerted once
    per burst, the open renewal left as it was; a day later the station may renew."""
    service = renewal_service(ca, clock, RenewalSettings(max_certificates_per_day=3))
    await issue(ca, make_csr, STATION)  # 1 today

    async def sign() -> Any:
        key = ec.generate_private_key(ec.SECP256R1())
        return await service.sign(STATION, make_csr(key=key, cn="SN-0001"), CertificateKind.STATION)

    assert [(await sign()).accepted for _ in range(4)] == [True, True, False, False]
    refused = await sign()
    assert (refused.accepted, refused.reason_code) == (False, "TooManyCertificates")
    assert refused.detail is not None
    assert "3 ChargingStationCertificates were issued" in refused.detail
    (renewal,) = await service.store.open_renewals(STATION)
    assert renewal.state is S.SIGNED  # untouched by the refusals
    codes = [a.code for a in await service.alerts.list(STATION)]
    assert codes == ["certificate-burst"]
    valid = [r for r in await ca.station_certificates(STATION) if r.status.value == "valid"]
    assert len(valid) == 2  # the first one, and the renewal's: the replaced one is revoked
    clock.advance(timedelta(days=1, minutes=2))
    assert (await sign()).accepted


async def answer(service: RenewalService, item_id: int, response: dict[str, Any]) -> None:
    """The station answered outbox call ``item_id`` with ``response``; its listener runs."""
    outbox = service.outbox.store
    clock = service.clock
    await outbox.move(item_id, CallState.QUEUED, CallState.SENT, clock.now())
    await outbox.move(item_id, CallState.SENT, CallState.ANSWERED, clock.now(),
                      response=json.dumps(response))  # fmt: skip
    (item,) = [i for i in await service.outbox.list(STATION) if i.id == item_id]
    if item.action == "TriggerMessage":
        await service.trigger_finished(item)
    else:
        await service.call_finished(item)


async def test_each_renewal_step_is_logged_at_info_with_the_renewal_id(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Trigger sent, CSR received, certificate issued (serial), delivered, confirmed; and
    a failure with its reason: each an INFO line naming the renewal."""
    service = renewal_service(ca, clock)
    await issue(ca, make_csr, STATION)
    caplog.set_level(logging.INFO, logger="pkictl.renewal")
    renewal = await service.request(STATION, CertificateKind.STATION, requested_by="test")
    (trigger,) = await service.outbox.list(STATION)
    await answer(service, trigger.id, {"status": "Accepted"})
    assert (await service.sign(STATION, make_csr(cn="SN-0001"), CertificateKind.STATION)).accepted
    signed = await service.get(renewal.id)
    assert signed.outbox_id is not None
    await answer(service, signed.outbox_id, {"status": "Accepted"})
    await service.presented(STATION, signed.new_serial)
    assert (await service.get(renewal.id)).state is S.CONFIRMED
    failing = await service.request(STATION, CertificateKind.STATION, requested_by="test")
    (_, _, again) = await service.outbox.list(STATION)
    await answer(service, again.id, {"status": "Rejected"})
    assert (await service.get(failing.id)).state is S.FAILED

    lines = [r.getMessage() for r in caplog.records
             if r.name == "pkictl.renewal" and r.levelno == logging.INFO]  # fmt: skip
    first, second = f"renewal #{renewal.id}", f"renewal #{failing.id}"
    kind = CertificateKind.STATION.value
    steps = {
        "trigger sent": f"{first} of {kind} for {STATION}: TriggerMessage queued",
        "trigger accepted": f"{first}: {STATION} accepted the TriggerMessage",
        "csr received": f"{first} of {kind} for {STATION}: CSR received",
        "issued": f"{first}: certificate {signed.new_serial} issued for {STATION}",
        "delivered": f"{first}: {STATION} accepted certificate {signed.new_serial} (delivered)",
        "confirmed": f"{first} for {STATION} confirmed: certificate {signed.new_serial} in use",
        "failed": f"{second} of {kind} for {STATION} failed: the station "
        "answered TriggerMessage Rejected",
    }
    for step, text in steps.items():
        assert any(line.startswith(text) for line in lines), (step, lines)


async def unanswered_renewal(
    service: RenewalService, ca: CertificateAuthority, clock: FixedClock,
    make_csr: Callable[..., str],
) -> tuple[str, Renewal]:  # fmt: skip
    """A station renewal whose CertificateSigned was sent and went unanswered: (the
    station's current serial, the renewal)."""
    old = await issue(ca, make_csr, STATION)
    assert (await service.sign(STATION, make_csr(cn="SN-0001"), CertificateKind.STATION)).accepted
    (renewal,) = await service.store.open_renewals(STATION)
    assert renewal.outbox_id is not None
    outbox = service.outbox.store
    await outbox.move(renewal.outbox_id, CallState.QUEUED, CallState.SENT, clock.now())
    await outbox.move(renewal.outbox_id, CallState.SENT, CallState.TIMED_OUT, clock.now(),
                      error="no answer within 30 s")  # fmt: skip
    (item,) = [i for i in await service.outbox.list(STATION) if i.id == renewal.outbox_id]
    await service.call_finished(item)
    return old, await service.get(renewal.id)


@pytest.mark.parametrize("installed", [True, False], ids=["installed", "not-installed"])
async def test_an_unanswered_certificate_signed_waits_for_the_next_connection(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str], installed: bool
) -> None:
    """No answer to CertificateSigned says nothing about the certificate: the answer may
    have been late, or lost with the connection, after the station installed it. It used
    to fail the renewal at once -- a false alarm, and a renewal the station completed by
    reconnecting with the new certificate stayed failed with its old one never
    superseded. The station's next connection decides."""
    service = renewal_service(ca, clock)
    old, renewal = await unanswered_renewal(service, ca, clock, make_csr)
    assert (renewal.state, renewal.reason) == (S.SIGNED, UNANSWERED)
    assert await service.alerts.list(STATION) == []
    assert renewal.new_serial is not None
    await service.presented(STATION, renewal.new_serial if installed else old)
    ended = await service.get(renewal.id)
    new = await ca.find_by_serial(int(renewal.new_serial, 16))
    alerts = [a.code for a in await service.alerts.list(STATION)]
    if installed:
        assert ended.state is S.CONFIRMED
        assert (await ca.find_by_serial(int(old, 16))).status.value == "superseded"
        assert (new.status.value, alerts) == ("valid", [])
    else:  # back with the old one: it did not take the new one, which nobody may use
        assert ended.state is S.FAILED
        assert ended.reason is not None
        assert old in ended.reason
        assert (await ca.find_by_serial(int(old, 16))).status.value == "valid"
        assert (new.status.value, new.revocation_reason) == ("revoked", "superseded")
        assert alerts == ["renewal-failed"]


async def test_an_unanswered_renewal_of_a_station_that_stays_connected_is_retried(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    """The station neither answers nor reconnects (it may keep one connection for
    months): after `retry_after_s` the scan fails the renewal, so that it is retried
    after the backoff instead of waiting for ever. The certificate stays valid: the
    station may have installed it."""
    settings = RenewalSettings(jitter_s=0, retry_after_s=600)
    service = renewal_service(ca, clock, settings)
    _, renewal = await unanswered_renewal(service, ca, clock, make_csr)
    clock.advance(timedelta(seconds=599))
    await service.scan()
    assert (await service.get(renewal.id)).state is S.SIGNED
    clock.advance(timedelta(seconds=1))
    await service.scan()
    ended = await service.get(renewal.id)
    assert ended.state is S.FAILED
    assert ended.reason is not None
    assert "did not reconnect within 600 s" in ended.reason
    assert renewal.new_serial is not None
    assert (await ca.find_by_serial(int(renewal.new_serial, 16))).status.value == "valid"
    assert [a.code for a in await service.alerts.list(STATION)] == ["renewal-failed"]


@pytest.mark.parametrize("new_key", [True, False], ids=["new-key", "same-csr"])
async def test_a_csr_after_an_unanswered_certificate_signed_is_answered_afresh(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str], new_key: bool
) -> None:
    """The station sends a CSR again: it never got the certificate. With a new key it is
    signed anew; the same CSR gets the certificate already signed for it, sent again.
    Either is waited for afresh: a reconnection with the old certificate before it
    arrives fails nothing."""
    service = renewal_service(ca, clock)
    old, renewal = await unanswered_renewal(service, ca, clock, make_csr)
    key = ec.generate_private_key(ec.SECP256R1()) if new_key else None
    csr = make_csr(key=key, cn="SN-0001")
    assert (await service.sign(STATION, csr, CertificateKind.STATION)).accepted
    again = await service.get(renewal.id)
    assert (again.state, again.reason) == (S.SIGNED, None)
    assert (again.new_serial != renewal.new_serial) is new_key
    assert again.outbox_id != renewal.outbox_id  # CertificateSigned queued again
    deliveries = [i for i in await service.outbox.list(STATION) if i.action == "CertificateSigned"]
    assert len(deliveries) == 2
    assert len(await ca.station_certificates(STATION)) == (3 if new_key else 2)
    assert renewal.new_serial is not None
    replaced = await ca.find_by_serial(int(renewal.new_serial, 16))
    assert replaced.status.value == ("revoked" if new_key else "valid")  # replaced: at once
    await service.presented(STATION, old)
    assert (await service.get(renewal.id)).state is S.SIGNED


async def test_a_certificate_close_to_expiry_and_still_in_use_is_announced_once(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    """The station stays away through its renewal window: the renewal is triggered but
    never answered. At 30 and at 14 days before expiry the scan raises the critical
    certificate-expiring, naming the certificate and what its renewal waits for; later
    scans do not repeat them."""
    service = renewal_service(ca, clock)
    serial = await issue(ca, make_csr, STATION)
    (record,) = await ca.store.find_certificates(CertificateQuery(serial=int(serial, 16)))
    clock.advance(record.not_after - timedelta(days=31) - clock.now())
    (started,) = await service.scan()
    assert [a.code for a in await service.alerts.list(STATION)] == []  # just triggered
    clock.advance(timedelta(days=1, seconds=1))  # 30 days and a bit before expiry
    await service.scan()
    await service.scan()
    clock.advance(timedelta(days=16))  # 14 days and a bit before expiry
    await service.scan()
    await service.scan()
    alerts = await service.alerts.list(STATION)
    assert [a.code for a in alerts] == ["certificate-expiring"] * 2
    assert all(serial in a.message for a in alerts)
    assert all(
        f"its renewal #{started.id} is triggered and the station is offline" in a.message
        for a in alerts
    )
    assert sorted(a.message.split(" (in ")[1].split(" ")[0] for a in alerts) == ["13", "29"]
    await service.close()


async def test_a_restart_resumes_half_done_renewals(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    service = renewal_service(ca, clock)
    store, outbox = service.store, service.outbox
    now = clock.now()
    # killed after signing, before CertificateSigned was queued
    signed = await store.create(
        STATION, CertificateKind.STATION, S.CSR_RECEIVED,
        requested_by="test", old_serial=None, at=now,
    )  # fmt: skip
    assert signed is not None
    issued = await ca.issue_for_station(
        csr_pem=make_csr(cn="SN-0001"), profile_name=PROFILE_FOR[CertificateKind.STATION],
        station_id=STATION, actor="test",
    )  # fmt: skip
    await store.move(signed.id, S.CSR_RECEIVED, S.SIGNED, now, new_serial=issued.record.serial_hex)
    # killed while signing a V2G CSR
    signing = await store.create(
        STATION, CertificateKind.V2G, S.CSR_RECEIVED,
        requested_by="test", old_serial=None, at=now,
    )  # fmt: skip
    assert signing is not None

    assert await service.resume(stale_before=now) == 0  # as young as that: maybe in progress
    assert await service.resume() == 2

    queued = {item.action: item for item in await outbox.list(STATION)}
    delivery = queued["CertificateSigned"]
    assert delivery.payload["certificate_type"] == "ChargingStationCertificate"
    assert delivery.payload["certificate_chain"].count("BEGIN CERTIFICATE") == len(issued.chain)
    assert (await store.get(signed.id)).outbox_id == delivery.id
    assert queued["TriggerMessage"].payload == {"requested_message": "SignV2GCertificate"}
    assert (await store.get(signing.id)).state is S.TRIGGERED
    assert await service.resume() == 0  # nothing left half done


async def test_a_certificate_signed_before_a_crash_is_delivered_not_signed_again(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    """Killed after the certificate was signed and recorded, before the renewal moved on
    (a separate transaction): the resumed renewal delivers that certificate."""
    service = renewal_service(ca, clock)
    store, outbox = service.store, service.outbox
    key = ec.generate_private_key(ec.SECP256R1())
    csr_pem = make_csr(key=key, cn="SN-0001")
    renewal = await store.create(
        STATION, CertificateKind.STATION, S.CSR_RECEIVED,
        requested_by="test", old_serial=None, at=clock.now(),
    )  # fmt: skip
    assert renewal is not None
    digest = hashlib.sha256(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )).hexdigest()  # fmt: skip
    await store.move(renewal.id, S.CSR_RECEIVED, S.CSR_RECEIVED, clock.now(),
                     csr_key_sha256=digest)  # fmt: skip
    issued = await ca.issue_for_station(
        csr_pem=csr_pem, profile_name=PROFILE_FOR[CertificateKind.STATION], station_id=STATION,
        actor="test",
    )  # fmt: skip

    assert await service.resume() == 1

    resumed = await store.get(renewal.id)
    assert (resumed.state, resumed.new_serial) == (S.SIGNED, issued.record.serial_hex)
    (delivery,) = await outbox.list(STATION)
    assert delivery.action == "CertificateSigned"
    assert (
        issued.record.certificate().public_bytes(serialization.Encoding.PEM).decode()
        in (delivery.payload["certificate_chain"])
    )
    assert len(await ca.station_certificates(STATION)) == 1  # none signed again


async def test_a_replaced_certificate_is_revoked_after_the_grace_period(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    settings = RenewalSettings(revoke_replaced_after_s=7 * 86400, jitter_s=0)
    published: list[tuple[str, x509.CertificateRevocationList]] = []

    def write(relative: str, der: bytes) -> Path:
        published.append((relative, x509.load_der_x509_crl(der)))
        return Path(relative)

    service = dataclasses.replace(
        renewal_service(ca, clock, settings), revoker=Revocations(ca, write)
    )
    old = await issue(ca, make_csr, STATION)
    renewal = await service.store.create(
        STATION, CertificateKind.STATION, S.DELIVERED,
        requested_by="test", old_serial=old, at=clock.now(),
    )  # fmt: skip
    assert renewal is not None
    await service.presented(STATION, None)  # nothing presented: nothing happens
    await service.store.move(renewal.id, S.DELIVERED, S.DELIVERED, clock.now(), new_serial="ab")
    await service.presented(STATION, "ab")  # the station is back with the new certificate
    assert (await service.get(renewal.id)).state is S.CONFIRMED
    assert (await ca.find_by_serial(int(old, 16))).status.value == "superseded"

    clock.advance(timedelta(days=7) - timedelta(seconds=1))
    await service.scan()
    assert (await ca.find_by_serial(int(old, 16))).status.value == "superseded"
    clock.advance(timedelta(seconds=1))
    await service.scan()
    revoked = await ca.find_by_serial(int(old, 16))
    assert (revoked.status.value, revoked.revocation_reason) == ("revoked", "superseded")
    ((path, crl),) = published  # the CA's next CRL, at once
    assert path == f"crl/{revoked.issuer_ca}.crl"
    assert crl.get_revoked_certificate_by_serial_number(int(old, 16)) is not None
    await service.scan()  # once only


async def test_certificates_replaced_by_one_scan_publish_one_crl(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    await second_station(ca, clock)
    published: list[x509.CertificateRevocationList] = []

    def write(_relative: str, der: bytes) -> Path:
        published.append(x509.load_der_x509_crl(der))
        return Path(_relative)

    settings = RenewalSettings(revoke_replaced_after_s=86400, jitter_s=0)
    service = dataclasses.replace(
        renewal_service(ca, clock, settings), revoker=Revocations(ca, write)
    )
    replaced = []  # CS001 renewed twice, CS002 once
    current = {"CS001": await issue(ca, make_csr, "CS001"),
               "CS002": await issue(ca, make_csr, "CS002")}  # fmt: skip
    for station in ("CS001", "CS001", "CS002"):
        renewal = await service.store.create(
            station, CertificateKind.STATION, S.DELIVERED,
            requested_by="test", old_serial=current[station], at=clock.now(),
        )  # fmt: skip
        assert renewal is not None
        replaced.append(current[station])
        current[station] = await issue(ca, make_csr, station)
        await service.store.move(renewal.id, S.DELIVERED, S.DELIVERED, clock.now(),
                                 new_serial=current[station])  # fmt: skip
        await service.presented(station, current[station])
    # the operator revoked one of them meanwhile, for a reason of their own: it stays so
    await ca.revoke(int(replaced[1], 16), "keyCompromise", "operator")
    published.clear()

    clock.advance(timedelta(days=1))
    await service.scan()

    (crl,) = published  # one CRL for the scan, with all three
    for serial, reason in zip(replaced, ("superseded", "keyCompromise", "superseded"),
                              strict=True):  # fmt: skip
        record = await ca.find_by_serial(int(serial, 16))
        assert (record.status.value, record.revocation_reason) == ("revoked", reason)
        assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    await service.scan()
    assert len(published) == 1  # nothing left to revoke: no CRL


class RacingStore(SqlRenewalStore):
    """Hands out the open renewal, then moves it signed -> delivered: the station's
    answer to CertificateSigned landing between a read and the write that follows."""

    async def open_renewal(self, station_id: str, kind: CertificateKind) -> Renewal | None:
        found = await super().open_renewal(station_id, kind)
        if found is not None and found.state is S.SIGNED:
            await self.move(found.id, S.SIGNED, S.DELIVERED, found.updated_at)
        return found


async def test_a_reconnection_racing_the_answer_still_confirms(
    ca: CertificateAuthority, clock: FixedClock
) -> None:
    service = renewal_service(ca, clock)
    racing = dataclasses.replace(service, store=RacingStore(ca.store.database))  # type: ignore[attr-defined]
    renewal = await racing.store.create(
        STATION, CertificateKind.STATION, S.SIGNED,
        requested_by="test", old_serial=None, at=clock.now(),
    )  # fmt: skip
    assert renewal is not None
    await racing.store.move(renewal.id, S.SIGNED, S.SIGNED, clock.now(), new_serial="ab")
    await racing.presented(STATION, "ab")
    assert (await racing.get(renewal.id)).state is S.CONFIRMED


async def test_jitter_spreads_the_renewals_of_one_day_over_the_window(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    service = renewal_service(ca, clock, RenewalSettings(jitter_s=3 * 86400))
    records = [
        (await ca.issue_for_station(
            csr_pem=make_csr(cn="SN-0001"), profile_name="charging-station",
            station_id=STATION, actor="test",
        )).record
        for _ in range(40)
    ]  # fmt: skip
    starts = [service.starts_at(r) for r in records]
    window = timedelta(days=3)
    for record, start in zip(records, starts, strict=True):
        assert record.renew_after <= start <= record.renew_after + window
    assert len({s.date() for s in starts}) >= 3  # spread over the days, not one
    assert max(starts) - min(starts) > window / 2
    assert starts == [service.starts_at(r) for r in records]  # fixed per certificate
