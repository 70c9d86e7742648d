"""The gate's throttle on password guessing (issue 22): per station id with a doubling
lockout, audited; failures of one id lock out no other id behind the same address; an
unknown id and a wrong password are refused alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from csms.domain.handshake import HttpStatus, Refusal, Transport
from csms.services import gate as gate_module
from csms.services.gate import THROTTLED_ACTION, ConnectionGate, ConnectionRequest
from pki.audit import AuditEvent
from pki.clock import FixedClock
from pki.credentials import hash_password, verify_password
from pki.policy import RenewalRule
from pki.records import Station
from pki.store.sql import SqlStore

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
PASSWORD = "a-profile-2-password"
NAT = "198.51.100.7"


async def gate_with_stations(store: SqlStore, clock: FixedClock) -> ConnectionGate:
    hashed = hash_password(PASSWORD)
    for station_id in ("CS1", "CS2", "CS3"):
        await store.add_station(
            Station(station_id, f"SN-{station_id}", None, 2, hashed, NOW),
            AuditEvent("station.added", "test", f"station:{station_id}"), NOW,
        )  # fmt: skip
    return ConnectionGate(
        store=store, clock=clock, organization="Example CPO",
        observed_renewal=RenewalRule(before_expiry_days=90), station_cas=(),
    )  # fmt: skip


def attempt(station_id: str, password: str, address: str = NAT) -> ConnectionRequest:
    return ConnectionRequest(
        station_id, Transport.TLS, None, (station_id, password), f"{address}:40000"
    )


async def test_guesses_on_one_id_lock_it_out_from_every_address_and_no_other_id(
    sqlite_store: SqlStore,
) -> None:
    clock = FixedClock(NOW)
    gate = await gate_with_stations(sqlite_store, clock)
    statuses = []
    for number in range(6):  # five free guesses, from rotating addresses
        request = attempt("CS1", f"guess-number-{number:04d}", f"203.0.113.{number}")
        statuses.append((await gate.admit(request)).decision.status)
    assert statuses == [HttpStatus.UNAUTHORIZED] * 5 + [HttpStatus.TOO_MANY_REQUESTS]
    # even the right password waits for the lockout to end
    assert (await gate.admit(attempt("CS1", PASSWORD))).decision.status == 429
    # the other stations behind the address are not locked out
    for station_id in ("CS2", "CS3"):
        assert (await gate.admit(attempt(station_id, PASSWORD))).decision.accepted
    clock.now = lambda: NOW + timedelta(seconds=16)  # type: ignore[method-assign]
    assert (await gate.admit(attempt("CS1", PASSWORD))).decision.accepted
    throttled = await sqlite_store.audit_entries(actions=[THROTTLED_ACTION])
    assert [(e.event.target, e.event.detail["reason"], e.event.detail["failures"])
            for e in throttled] == [("station:CS1", "station-locked-out", 5)]  # fmt: skip
    assert throttled[0].event.detail["until"] == (NOW + timedelta(seconds=15)).isoformat()


async def test_the_lockout_doubles_with_each_failure_after_it(sqlite_store: SqlStore) -> None:
    clock = FixedClock(NOW)
    gate = await gate_with_stations(sqlite_store, clock)
    later = NOW
    for number in range(8):
        clock.now = lambda at=later: at  # type: ignore[method-assign]
        decision = (await gate.admit(attempt("CS1", f"guess-number-{number:04d}"))).decision
        assert decision.status is HttpStatus.UNAUTHORIZED
        later += timedelta(minutes=5)  # each lockout over (15, 30, 60, 120 s) before the next
    throttled = await sqlite_store.audit_entries(actions=[THROTTLED_ACTION])
    lasting = [datetime.fromisoformat(e.event.detail["until"]) - e.at for e in throttled]
    assert lasting == [timedelta(seconds=s) for s in (15, 30, 60, 120)]


async def test_spraying_many_ids_from_one_address_blocks_its_password_attempts(
    sqlite_store: SqlStore,
) -> None:
    gate = await gate_with_stations(sqlite_store, FixedClock(NOW))
    for number in range(20):
        refused = await gate.admit(attempt(f"UNKNOWN{number}", "a-guess-of-16-chars"))
        assert refused.decision.status is HttpStatus.UNAUTHORIZED
    assert (await gate.admit(attempt("CS2", PASSWORD))).decision.status == 429
    assert (await gate.admit(attempt("CS2", PASSWORD, "192.0.2.9"))).decision.accepted
    throttled = await sqlite_store.audit_entries(actions=[THROTTLED_ACTION])
    assert [(e.event.target, e.event.detail["reason"]) for e in throttled] == [
        (f"address:{NAT}", "address-locked-out")
    ]


async def test_an_unknown_id_is_refused_as_slowly_as_a_wrong_password(
    sqlite_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password is put through scrypt whether the id exists or not: timing does not
    tell who exists either (ADR 5)."""
    gate = await gate_with_stations(sqlite_store, FixedClock(NOW))
    checked: list[str] = []

    def spy(password: str, stored: str) -> bool:
        checked.append(password)
        return verify_password(password, stored)

    monkeypatch.setattr(gate_module, "verify_password", spy)
    refusals = []
    for station_id in ("CS1", "NOSUCH"):
        decision = (
            await gate.admit(attempt(station_id, f"not-the-password-{station_id}"))
        ).decision
        assert decision.status is HttpStatus.UNAUTHORIZED
        refusals.append(decision.refusal)
    assert refusals == [Refusal.BAD_CREDENTIALS, Refusal.UNKNOWN_STATION]
    assert checked == ["not-the-password-CS1", "not-the-password-NOSUCH"]
