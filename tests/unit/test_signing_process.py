"""Station CSRs checked and signed in a child process (`pki.keys.process`, ADR 15).

The child is a real `python -m pki.keys.process` over real pipes, opening the CA's real
encrypted key files; each test compares it with the inline pipeline it stands in for.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from pki.audit import AuditEvent, verify_chain
from pki.authority import CertificateAuthority, CsoIdentity, InlineIssuing
from pki.clock import FixedClock
from pki.errors import IssuanceRefused, KeyAccessError, ReasonCode
from pki.keys import process
from pki.keys.file import FileKeyStore
from pki.keys.process import SigningProcess
from pki.policy import Policy, load_policy
from pki.records import CertificateQuery, Station
from pki.store.sql import SqlStore

PASSPHRASE = b"signing-process-test"
PROFILE = "charging-station"
STATIONS = 40


@dataclass
class Setup:
    ca: CertificateAuthority
    signing: SigningProcess
    keys: Path
    stations: list[Station]


def station_csrs(make_csr: Callable[..., str], stations: list[Station]) -> list[str]:
    key = ec.generate_private_key(ec.SECP256R1())
    return [make_csr(key, cn=station.serial_number) for station in stations]


@pytest.fixture
async def setup(
    sqlite_store: SqlStore,
    tmp_path: Path,
    policy: Policy,
    clock: FixedClock,
    identity: CsoIdentity,
) -> AsyncIterator[Setup]:
    keys = tmp_path / "keys"
    signing = SigningProcess(keys, lambda: PASSPHRASE, policy)
    ca = CertificateAuthority(
        store=sqlite_store,
        keys=FileKeyStore(keys, PASSPHRASE),
        policy=policy,
        clock=clock,
        identity=identity,
        csr_issuing=signing,
    )
    await ca.initialize(frozenset({"cso"}), "test")  # self-signed and CA keys: inline
    stations = [
        Station(f"CS{i:03d}", f"SN-{i:03d}", None, 3, None, clock.now()) for i in range(STATIONS)
    ]
    for station in stations:
        await sqlite_store.add_station(
            station, AuditEvent("station.added", "test", station.id), clock.now()
        )
    try:
        yield Setup(ca, signing, keys, stations)
    finally:
        await signing.aclose()


async def issue(ca: CertificateAuthority, csr: str, station: Station) -> x509.Certificate:
    issued = await ca.issue_for_station(
        csr_pem=csr, profile_name=PROFILE, station_id=station.id, actor="test"
    )
    return issued.chain[0]


async def audit_intact(ca: CertificateAuthority) -> bool:
    return verify_chain(await ca.store.audit_entries(), await ca.store.audit_head()) == []


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_the_child_issues_what_the_inline_pipeline_issues(
    setup: Setup, make_csr: Callable[..., str]
) -> None:
    station = setup.stations[0]
    csr = station_csrs(make_csr, [station])[0]
    from_child = await issue(setup.ca, csr, station)
    assert alive(setup.signing.pid)
    assert setup.signing.pid != os.getpid()

    setup.ca.csr_issuing = InlineIssuing()
    inline = await issue(setup.ca, csr, station)

    assert from_child.subject == inline.subject
    assert from_child.issuer == inline.issuer
    assert from_child.public_key() == inline.public_key()
    assert list(from_child.extensions) == list(inline.extensions)
    assert from_child.not_valid_before_utc == inline.not_valid_before_utc
    issuer = (await setup.ca.chain("cso-station-ca"))[0]
    from_child.verify_directly_issued_by(issuer)
    rows = await setup.ca.store.find_certificates(CertificateQuery(station_id=station.id))
    assert {r.serial for r in rows} == {from_child.serial_number, inline.serial_number}


async def test_many_requests_at_once_each_get_their_own_certificate(
    setup: Setup, make_csr: Callable[..., str]
) -> None:
    csrs = station_csrs(make_csr, setup.stations)
    certificates = await asyncio.gather(
        *(issue(setup.ca, csr, station) for csr, station in zip(csrs, setup.stations, strict=True))
    )
    for certificate, station in zip(certificates, setup.stations, strict=True):
        common_name = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        assert common_name[0].value == station.serial_number
    rows = await setup.ca.store.find_certificates(CertificateQuery(profile=PROFILE))
    assert sorted(r.serial for r in rows) == sorted(c.serial_number for c in certificates)
    assert await audit_intact(setup.ca)
    assert setup.signing.restarts == 0


async def test_refusals_come_back_typed_and_the_child_goes_on(
    setup: Setup, make_csr: Callable[..., str]
) -> None:
    station = setup.stations[0]
    good = station_csrs(make_csr, [station])[0]
    wrong_subject = make_csr(cn="SN-somebody-else")
    body = good.split("-----")[2].replace("\n", "")
    tampered = good.replace(body[-40:-30], body[-40:-30][::-1], 1)

    with pytest.raises(IssuanceRefused) as caught:
        await issue(setup.ca, wrong_subject, station)
    assert caught.value.reason is ReasonCode.SUBJECT_MISMATCH
    assert caught.value.field is not None
    with pytest.raises(IssuanceRefused) as caught:
        await issue(setup.ca, tampered, station)
    assert caught.value.reason in {ReasonCode.CSR_BAD_SIGNATURE, ReasonCode.CSR_NOT_PEM}

    pid = setup.signing.pid
    assert alive(pid)
    await issue(setup.ca, good, station)
    assert setup.signing.pid == pid
    refused = [
        e for e in await setup.ca.store.audit_entries() if e.event.action == "certificate.refused"
    ]
    assert len(refused) == 2


async def test_a_killed_child_loses_nothing_and_is_started_again(
    setup: Setup, make_csr: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "RESPAWN_AFTER_S", 0.0)
    csrs = station_csrs(make_csr, setup.stations)
    await issue(setup.ca, csrs[0], setup.stations[0])
    first = setup.signing.pid
    assert first is not None

    in_flight = [
        asyncio.create_task(issue(setup.ca, csr, station))
        for csr, station in zip(csrs, setup.stations, strict=True)
    ]
    await asyncio.sleep(0)  # queued and written to the child
    os.kill(first, signal.SIGKILL)
    certificates = await asyncio.wait_for(asyncio.gather(*in_flight), 30)

    assert len({c.serial_number for c in certificates}) == STATIONS
    assert setup.signing.restarts == 1
    await issue(setup.ca, csrs[0], setup.stations[0])  # starts a new child
    assert setup.signing.pid not in {None, first}
    rows = await setup.ca.store.find_certificates(CertificateQuery(profile=PROFILE))
    assert len(rows) == STATIONS + 2
    assert await audit_intact(setup.ca)


async def test_a_wrong_passphrase_is_a_key_access_error(
    setup: Setup, make_csr: Callable[..., str], policy: Policy
) -> None:
    setup.ca.csr_issuing = wrong = SigningProcess(setup.keys, lambda: b"not-it", policy)
    try:
        station = setup.stations[0]
        with pytest.raises(KeyAccessError):
            await issue(setup.ca, station_csrs(make_csr, [station])[0], station)
        assert alive(wrong.pid)
    finally:
        await wrong.aclose()


async def test_a_profile_of_another_policy_runs_inline(
    setup: Setup, make_csr: Callable[..., str], policy: Policy
) -> None:
    other = load_policy(Path(policy.source))
    setup.ca.csr_issuing = elsewhere = SigningProcess(setup.keys, lambda: PASSPHRASE, other)
    station = setup.stations[0]
    await issue(setup.ca, station_csrs(make_csr, [station])[0], station)
    assert elsewhere.pid is None  # never started: the CA's profiles are not its policy's


async def test_closing_stops_the_child_and_later_requests_run_inline(
    setup: Setup, make_csr: Callable[..., str]
) -> None:
    station = setup.stations[0]
    csr = station_csrs(make_csr, [station])[0]
    await issue(setup.ca, csr, station)
    pid = setup.signing.pid
    await setup.signing.aclose()
    assert setup.signing.pid is None
    for _ in range(100):
        if not alive(pid):
            break
        await asyncio.sleep(0.05)
    assert not alive(pid)
    await issue(setup.ca, csr, station)
    assert setup.signing.restarts == 0


async def test_without_a_process_to_be_had_it_signs_inline(
    setup: Setup, make_csr: Callable[..., str], policy: Policy, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-python")
    setup.ca.csr_issuing = broken = SigningProcess(
        setup.keys, lambda: PASSPHRASE, policy, python=missing
    )
    station = setup.stations[0]
    certificate = await issue(setup.ca, station_csrs(make_csr, [station])[0], station)
    assert broken.pid is None
    rows = await setup.ca.store.find_certificates(CertificateQuery(station_id=station.id))
    assert [r.serial for r in rows] == [certificate.serial_number]


async def test_a_hung_child_is_killed_and_what_it_held_is_signed_inline(
    setup: Setup, make_csr: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "ANSWER_TIMEOUT_S", 0.4)
    csrs = station_csrs(make_csr, setup.stations[:5])
    await issue(setup.ca, csrs[0], setup.stations[0])
    hung = setup.signing.pid
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)  # alive, answering nothing
    certificates = await asyncio.wait_for(
        asyncio.gather(
            *(
                issue(setup.ca, csr, station)
                for csr, station in zip(csrs, setup.stations[:5], strict=True)
            )
        ),
        30,
    )
    assert len(certificates) == 5
    assert setup.signing.restarts == 1
    assert not alive(hung)
