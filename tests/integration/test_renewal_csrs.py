"""Several CSRs from one station (issue 22, items 11 and 13), against a real `pkictl
serve` on 127.0.0.1 and a station built on the `ocpp` library's ChargePoint over mutual
TLS: every certificate issued over OCPP belongs to a renewal; a newer CSR replaces the
renewal's unconfirmed certificate (revoked at once, CRL published); a refused CSR after
delivery leaves what was delivered; a burst of CSRs is refused with a reason."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from integration_support import ORG, csr, initialized_home
from ocpp.routing import on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action
from simulated_station import Renewing, Service, Station, pkictl_json, serving
from websockets.exceptions import InvalidMessage, InvalidStatus

STATIONS = {"C1": ("SN-C1", 3, False), "C2": ("SN-C2", 3, False)}
WAIT_S = 60.0


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    home = await initialized_home(tmp_path, STATIONS)
    async with serving(home, STATIONS) as running:
        yield running


def rsa_csr(key: rsa.RSAPrivateKey, serial: str) -> str:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, serial),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
        ]
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


async def send_csr(client: Renewing, station: Station, key: Any, pem: str) -> Any:
    station.pending_key = key
    request = call.SignCertificate(csr=pem, certificate_type="ChargingStationCertificate")
    return await client.call(request)


async def renewal(service: Service, station_id: str, **wanted: Any) -> dict[str, Any]:
    """The station's last renewal once it has the ``wanted`` fields."""
    last: dict[str, Any] = {}
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        rows = await asyncio.to_thread(
            pkictl_json, service.home, "renewals", "list", "--station", station_id
        )
        last = rows[-1] if rows else {}
        if all(last.get(k) == v for k, v in wanted.items()):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{station_id}: renewal {last}, never {wanted}")


async def statuses(service: Service, station_id: str) -> dict[str, str]:
    rows = await asyncio.to_thread(
        pkictl_json, service.home, "cert", "list", "--station", station_id
    )
    return {row["serial"]: row["status"] for row in rows}


def crl_serials(service: Service) -> set[str]:
    url = f"http://127.0.0.1:{service.ports.http_port}/crl/cso-station-ca.crl"
    with urllib.request.urlopen(url, timeout=10) as answer:
        crl = x509.load_der_x509_crl(answer.read())
    return {format(entry.serial_number, "x") for entry in crl}


def keep(station: Station, name: str) -> tuple[Path, Path]:
    """A copy of the certificate the station installed last (the next one overwrites it)."""
    assert station.installed is not None
    chain, key = station.installed
    return (
        Path(shutil.copy(chain, chain.with_name(f"{name}.pem"))),
        Path(shutil.copy(key, key.with_name(f"{name}.key"))),
    )


async def test_a_newer_csr_replaces_the_unconfirmed_certificate_of_its_renewal(
    service: Service,
) -> None:
    station = await service.station("C1")
    original = format(
        x509.load_pem_x509_certificates(station.identity[0].read_bytes())[0].serial_number, "x"
    )
    client, listener = await service.connect(station, station.identity)
    try:
        # an RSA CSR: signed and delivered
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert (await send_csr(client, station, rsa_key, rsa_csr(rsa_key, "SN-C1"))).status == (
            "Accepted"
        )
        first = await renewal(service, "C1", state="delivered")
        await asyncio.wait_for(station.installing.wait(), WAIT_S)
        first_identity = keep(station, "C1-first")
        assert first["new_serial"] == station.installed_serial

        # a P-384 CSR in the same renewal: its certificate replaces the first one
        station.installing.clear()
        p384 = ec.generate_private_key(ec.SECP384R1())
        assert (await send_csr(client, station, p384, csr(p384, "SN-C1"))).status == "Accepted"
        await asyncio.wait_for(station.installing.wait(), WAIT_S)
        second = await renewal(
            service, "C1", state="delivered", new_serial=station.installed_serial
        )
        assert second["id"] == first["id"]  # the same renewal: replaced, not added
        known = await statuses(service, "C1")
        assert known[first["new_serial"]] == "revoked"  # at once, not after a grace period
        assert first["new_serial"] in await asyncio.to_thread(crl_serials, service)
        revoked = await asyncio.to_thread(
            pkictl_json, service.home, "cert", "show", first["new_serial"]
        )
        assert revoked["revocation_reason"] == "superseded"

        # a bad CSR after delivery: refused, and what was delivered stays
        bad = ec.generate_private_key(ec.SECP256R1())
        refused = await send_csr(client, station, bad, csr(bad, "SN-C2"))  # C2's serial
        assert refused.status == "Rejected"
        assert refused.status_info["reason_code"]
        after = await renewal(service, "C1")
        assert (after["id"], after["state"], after["new_serial"]) == (
            first["id"], "delivered", second["new_serial"],
        )  # fmt: skip
    finally:
        await client._connection.close()
        listener.cancel()

    # the reconnect serial decides: the replaced certificate is refused, the new one confirms
    with pytest.raises((InvalidStatus, InvalidMessage, ssl.SSLError, ConnectionError)):
        await service.connect(station, first_identity)
    _, listener = await service.connect(station, station.installed)  # type: ignore[arg-type]
    try:
        confirmed = await renewal(service, "C1", state="confirmed")
        assert confirmed["new_serial"] == second["new_serial"]
    finally:
        listener.cancel()
    known = await statuses(service, "C1")
    assert known == {
        original: "superseded",
        first["new_serial"]: "revoked",
        second["new_serial"]: "valid",
    }
    every = await asyncio.to_thread(
        pkictl_json, service.home, "renewals", "list", "--station", "C1", "--history"
    )
    assert len(every) == 1  # the bad CSR opened nothing and failed nothing


class AcceptingAny(Renewing):
    """Answers every CertificateSigned Accepted (whichever key it is for)."""

    @on(Action.certificate_signed)
    async def on_certificate_signed(self, certificate_chain: str, **_: Any) -> Any:
        return call_result.CertificateSigned(status="Accepted")


async def test_a_burst_of_csrs_is_refused_with_a_reason_and_alerted(service: Service) -> None:
    station = await service.station("C2")  # its first certificate: 1 issued today
    connection = await websockets.connect(
        f"wss://127.0.0.1:{service.ports.ocpp_port}/ocpp/C2",
        ssl=service.home.client_context(station.identity),
        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        open_timeout=10,
    )
    client = AcceptingAny("C2", connection, station)
    listener = asyncio.create_task(client.start())
    answers = []
    try:
        for _ in range(12):
            key = ec.generate_private_key(ec.SECP256R1())
            answers.append(await send_csr(client, station, key, csr(key, "SN-C2")))
    finally:
        listener.cancel()
    told = [(a.status, (a.status_info or {}).get("reason_code")) for a in answers]
    assert told == [("Accepted", None)] * 4 + [("Rejected", "TooManyCertificates")] * 8
    assert "24 hours" in answers[4].status_info["additional_info"]
    known = await statuses(service, "C2")
    assert len(known) == 5  # its first one, and 4 in its renewal
    assert sorted(known.values()) == ["revoked", "revoked", "revoked", "valid", "valid"]
    alerts = await asyncio.to_thread(pkictl_json, service.home, "alerts", "list")
    assert [a["code"] for a in alerts if a["station"] == "C2"] == ["certificate-burst"]
