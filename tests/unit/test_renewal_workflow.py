"""The renewal workflow: its transition table, and resuming what a killed `pkictl
serve` left half done, over a real store and CA (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from csms.db.outbox import SqlOutboxStore
from csms.db.renewals import SqlRenewalStore
from csms.domain.renewal import (
    TRANSITIONS,
    CertificateKind,
    InvalidTransition,
    RenewalEvent,
    RenewalState,
    advance,
)
from csms.services.outbox import Outbox
from csms.services.renewals import PROFILE_FOR, RenewalService
from pki.authority import CertificateAuthority
from pki.clock import FixedClock

STATION = "CS001"
S, E = RenewalState, RenewalEvent
ALLOWED = {
    (S.DUE, E.TRIGGER): S.TRIGGERED,
    (S.DUE, E.CSR): S.CSR_RECEIVED,
    (S.TRIGGERED, E.CSR): S.CSR_RECEIVED,
    (S.CSR_RECEIVED, E.SIGN): S.SIGNED,
    (S.CSR_RECEIVED, E.REFUSE): S.FAILED,
    (S.CSR_RECEIVED, E.RESUME): S.DUE,
    (S.SIGNED, E.ACCEPT): S.DELIVERED,
    (S.SIGNED, E.REJECT): S.FAILED,
    (S.SIGNED, E.CONFIRM): S.CONFIRMED,
    (S.SIGNED, E.CSR): S.CSR_RECEIVED,
    (S.DELIVERED, E.CONFIRM): S.CONFIRMED,
    (S.DELIVERED, E.CSR): S.CSR_RECEIVED,
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


async def test_a_restart_resumes_half_done_renewals(
    ca: CertificateAuthority, clock: FixedClock, make_csr: Callable[..., str]
) -> None:
    store = SqlRenewalStore(ca.store.engine)  # type: ignore[attr-defined]
    outbox = Outbox(SqlOutboxStore(ca.store.engine), clock)  # type: ignore[attr-defined]
    service = RenewalService(store, ca, outbox, clock)
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

    assert await service.resume() == 2

    queued = {item.action: item for item in await outbox.list(STATION)}
    delivery = queued["CertificateSigned"]
    assert delivery.payload["certificate_type"] == "ChargingStationCertificate"
    assert delivery.payload["certificate_chain"].count("BEGIN CERTIFICATE") == len(issued.chain)
    assert (await store.get(signed.id)).outbox_id == delivery.id
    assert queued["TriggerMessage"].payload == {"requested_message": "SignV2GCertificate"}
    assert (await store.get(signing.id)).state is S.TRIGGERED
    assert await service.resume() == 0  # nothing left half done
