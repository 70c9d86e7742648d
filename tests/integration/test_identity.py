"""One certificate, one station (issue 22, items 1, 4 and 10), against a real `pkictl
serve` over mutual TLS on 127.0.0.1:

- a station serial and a SECC id each belong to one registered station;
- a certificate this CA issued admits only the station it was issued to, and `station
  remove` revokes the removed station's certificates (unless told to keep them);
- a SECC id a station reports that another station holds is refused, alerted and
  audited, and nothing is issued for it;
- a leaf certificate that claims to be a CA (basicConstraints CA:TRUE) is refused even
  when a trusted CA signed it (RFC 5280 4.2.1.9; OCPP TC_A_08_CSMS).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from integration_support import ORG, Home, Identity, initialized_home, passphrase_file, write_key
from ocpp.v201 import ChargePoint, call
from simulated_station import Service, pkictl, pkictl_json, serving
from websockets.exceptions import InvalidStatus

from csms.app import open_app
from pki.audit import AuditEvent
from pki.records import TrustAnchor, TrustRole

STATIONS = {
    "CS001": ("SN-0001", 3, False),
    "CS006": ("SN-0006", 3, False),
    "CS008": ("SN-0008", 3, False),
}
V2G_STATIONS = {"R1": ("SN-R1", 3, False), "R2": ("SN-R2", 3, False)}


@pytest.fixture
async def home(tmp_path: Path) -> Home:
    return await initialized_home(tmp_path, STATIONS)


async def connect(service: Service, station_id: str, identity: Identity) -> Any:
    return await websockets.connect(
        f"wss://127.0.0.1:{service.ports.ocpp_port}/ocpp/{station_id}",
        ssl=service.home.client_context(identity),
        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        open_timeout=10,
    )


async def boot_status(service: Service, station_id: str, identity: Identity) -> str:
    async with await connect(service, station_id, identity) as connection:
        station = ChargePoint(station_id, connection)
        listener = asyncio.create_task(station.start())
        try:
            answer = await station.call(
                call.BootNotification(
                    charging_station={"model": "Test", "vendor_name": "pkictl"},
                    reason="PowerUp",
                )
            )
        finally:
            listener.cancel()
    status: str = answer.status
    return status


async def refusal(service: Service, station_id: str, identity: Identity) -> tuple[int, str]:
    """The HTTP status of the refused upgrade, and the reason the event log gives."""
    with pytest.raises(InvalidStatus) as refused:
        await connect(service, station_id, identity)
    events = await asyncio.to_thread(
        pkictl_json, service.home, "events", "list", "--station", station_id, "--limit", "1"
    )
    assert events[-1]["event"] == "connection.refused"
    return refused.value.response.status_code, events[-1]["what"]


async def cli(home: Home, *args: str) -> Any:
    return await asyncio.to_thread(pkictl, home, *args)


async def test_a_certificate_admits_only_the_station_it_was_issued_to(home: Home) -> None:
    """The issue's scenario: CS001's certificate on /ocpp/CS003 registered with CS001's
    serial; CS006's certificate kept after its removal, its serial given to CS007."""
    cs001 = await home.issue("cs001", station="CS001", serial="SN-0001")
    cs006 = await home.issue("cs006", station="CS006", serial="SN-0006")
    duplicate = await cli(home, "station", "add", "CS003", "--serial", "SN-0001")
    assert duplicate.exit_code == 5, duplicate.output
    assert "SN-0001" in duplicate.stderr
    assert "CS001" in duplicate.stderr  # the station that holds it
    removed = await cli(home, "station", "remove", "CS006", "--keep-certificates")
    assert removed.exit_code == 0, removed.output
    added = await cli(home, "station", "add", "CS007", "--serial", "SN-0006")
    assert added.exit_code == 0, added.output
    async with serving(home, STATIONS) as service:
        assert await boot_status(service, "CS001", cs001) == "Accepted"
        assert await refusal(service, "CS003", cs001) == (403, "unknown-station")
        assert await refusal(service, "CS007", cs006) == (403, "issued-to-another-station")
        # the same id registered again is the station the certificate was issued to
        again = await cli(home, "station", "add", "CS006", "--serial", "SN-0009")
        assert again.exit_code == 0, again.output
        assert await refusal(service, "CS006", cs006) == (403, "serial-mismatch")


async def test_a_removed_station_leaves_no_valid_certificate_behind(home: Home) -> None:
    cs008 = await home.issue("cs008", station="CS008", serial="SN-0008")
    without_key = await cli(home, "station", "remove", "CS008", "--keep-certificates")
    assert without_key.exit_code == 0, without_key.output  # kept: no CRL to sign
    assert (await cli(home, "station", "add", "CS008", "--serial", "SN-0008")).exit_code == 0
    removed = await cli(
        home, "--passphrase-file", str(passphrase_file(home.directory)),
        "station", "remove", "CS008",
    )  # fmt: skip
    assert removed.exit_code == 0, removed.output
    assert "cessationOfOperation" in removed.stderr
    assert "published the CRL of cso-station-ca" in removed.stderr
    listed = await asyncio.to_thread(pkictl_json, home, "cert", "list", "--station", "CS008")
    assert {(c["status"], c["revocation_reason"]) for c in listed} == {
        ("revoked", "cessationOfOperation")
    }
    crl = x509.load_der_x509_crl((home.path / "crl" / "cso-station-ca.crl").read_bytes())
    leaf = x509.load_pem_x509_certificate(cs008[0].read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    # Registered again -- under its old id or another -- it starts clean.
    for station_id in ("CS008", "CS009"):
        added = await cli(home, "station", "add", station_id, "--serial", "SN-0008")
        assert added.exit_code == 0, added.output
        async with serving(home, STATIONS) as service:
            assert await refusal(service, station_id, cs008) == (403, "certificate-revoked")
        assert (await cli(home, "station", "remove", station_id)).exit_code == 0


async def test_a_removed_station_leaves_no_renewal_or_queued_call_behind(home: Home) -> None:
    """An offline station's renewal was asked for, and its installed certificates (the
    call queued): removing it ends the renewal and withdraws the call, so that a station
    registered again under its id gets neither (issue 22, item 1: it starts clean)."""
    await home.issue("cs006", station="CS006", serial="SN-0006")
    renewed = await cli(home, "renew", "CS006")
    assert renewed.exit_code == 0, renewed.output
    asked = await cli(home, "station", "certs", "CS006", "--refresh", "--wait", "1")
    assert asked.exit_code == 9, asked.output  # offline: no answer in time, still queued
    queued = await asyncio.to_thread(pkictl_json, home, "outbox", "list", "--station", "CS006")
    assert [(c["action"], c["state"]) for c in queued] == [("GetInstalledCertificateIds", "queued")]
    removed = await cli(
        home, "--passphrase-file", str(passphrase_file(home.directory)),
        "station", "remove", "CS006", "--json",
    )  # fmt: skip
    assert removed.exit_code == 0, removed.output
    assert json.loads(removed.stdout)["withdrawn"] == {"renewals": 1, "queued_calls": 1}
    renewals = await asyncio.to_thread(pkictl_json, home, "renewals", "list", "--history")
    assert [(r["station"], r["state"], r["reason"]) for r in renewals] == [
        ("CS006", "failed", "the station was removed")
    ]  # it was due: an offline station is triggered when it connects
    calls = await asyncio.to_thread(pkictl_json, home, "outbox", "list", "--station", "CS006")
    assert [(c["state"], c["error"]) for c in calls] == [("failed", "the station was removed")]
    assert (await cli(home, "station", "add", "CS006", "--serial", "SN-0006")).exit_code == 0
    async with open_app(home.path) as app:
        assert await app.outbox.store.oldest_queued("CS006") is None
        assert await app.renewals.store.open_renewals("CS006") == []


# --- item 10: a leaf that claims to be a CA --------------------------------------------


def mis_issuing_ca(directory: Path) -> tuple[x509.Certificate, Identity, Identity]:
    """A factory CA that signs, for CS001, a certificate with CA:TRUE and a proper one."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sloppy Factory CA")])
    now = datetime.now(UTC)
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=10)).not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip

    def leaf(name: str, is_ca: bool) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, "SN-0001"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
        ])  # fmt: skip
        certificate = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=60))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        chain = directory / f"{name}.pem"
        chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return chain, write_key(directory / f"{name}.key", key)

    return ca, leaf("ca-leaf", True), leaf("proper-leaf", False)


async def test_a_leaf_with_ca_true_is_refused_at_the_handshake(home: Home, tmp_path: Path) -> None:
    ca, ca_leaf, proper_leaf = mis_issuing_ca(tmp_path)
    async with open_app(home.path) as app:
        await app.store.add_trust_anchor(
            TrustAnchor(TrustRole.STATION_CA, ca.public_bytes(Encoding.DER), app.clock.now()),
            AuditEvent("trust.added", "test"),
            app.clock.now(),
        )
    async with serving(home, STATIONS) as service:
        assert await boot_status(service, "CS001", proper_leaf) == "Accepted"  # trusted
        assert await refusal(service, "CS001", ca_leaf) == (403, "certificate-is-ca")


# --- item 4: SECC ids -------------------------------------------------------------------


@pytest.fixture
async def v2g_service(tmp_path: Path) -> AsyncIterator[Service]:
    home = await initialized_home(tmp_path, V2G_STATIONS, frozenset({"cso", "v2g"}))
    added = await cli(
        home, "station", "add", "R3", "--serial", "SN-R3", "--secc-id", "DE*ABC*E0003"
    )
    assert added.exit_code == 0, added.output
    async with serving(home, V2G_STATIONS) as running:
        yield running


def v2g_csr(key: ec.EllipticCurvePrivateKey, secc_id: str) -> str:
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, secc_id),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
        x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "CPO"),
    ])  # fmt: skip
    request = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


async def test_station_add_refuses_a_secc_id_another_station_holds(
    v2g_service: Service,
) -> None:
    duplicate = await cli(
        v2g_service.home, "station", "add", "R4", "--serial", "SN-R4", "--secc-id", "DE*ABC*E0003"
    )
    assert duplicate.exit_code == 5, duplicate.output
    assert "R3" in duplicate.stderr
    assert "DE*ABC*E0003" in duplicate.stderr


async def test_a_reported_secc_id_held_by_another_station_is_refused(
    v2g_service: Service,
) -> None:
    station = await v2g_service.station("R1")  # registered without a SECC id
    station.secc_id = "DE*ABC*E0003"  # ... and it claims R3's
    client, listener = await v2g_service.connect(station, station.identity)
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        await client.call(
            call.SignCertificate(
                csr=v2g_csr(key, "DE*ABC*E0003"), certificate_type="V2GCertificate"
            )
        )
        rows: list[dict[str, Any]] = []
        for _ in range(300):
            rows = await asyncio.to_thread(
                pkictl_json, v2g_service.home, "renewals", "list", "--station", "R1"
            )
            if rows and rows[-1]["state"] == "failed":
                break
            await asyncio.sleep(0.1)
        assert rows
        assert rows[-1]["state"] == "failed", rows
        assert "R3" in rows[-1]["reason"]
    finally:
        listener.cancel()
    home = v2g_service.home
    shown = await asyncio.to_thread(pkictl_json, home, "station", "show", "R1")
    assert shown["secc_id"] is None
    assert [c for c in shown["certificates"] if c["profile"] == "v2g-secc"] == []
    alerts = await asyncio.to_thread(pkictl_json, home, "alerts", "list", "--station", "R1")
    assert "secc-id-conflict" in [a["code"] for a in alerts]
    audit = await asyncio.to_thread(pkictl_json, home, "audit", "list", "--limit", "500")
    refused = [e for e in audit if e["action"] == "station.secc-id"]
    assert [(e["target"], e["outcome"]) for e in refused] == [("station:R1", "refused")]
    assert refused[0]["detail"]["held_by"] == "R3"
